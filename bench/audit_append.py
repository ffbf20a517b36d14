"""Benchmark: durable audit appends per second and their latency, on SQLite and PostgreSQL.

Each run appends realistic ``decision`` records (about 0.3 kB of canonical JSON each) through
``AuditLog.append`` from N concurrent appender coroutines (1, 16, 128), each appending in a loop and timing every
call: a call returns only once its record is committed (group commit: one writer transaction per batch of up to
``batch_max`` queued records). Reported per backend and concurrency: records/s (records ÷ wall time of the run),
p50 and p99 append latency, records per commit; medians of ``--rounds`` runs. The log is the real one, on a
migrated database (a fresh SQLite file in a temporary directory; a fresh PostgreSQL database on 127.0.0.1:5432
with trust auth when reachable, dropped afterwards). The background checkpointer runs as in production (every
1000 records or 1 s).

    .venv/bin/python bench/audit_append.py [--records 20000] [--rounds 3] [--concurrency 1,16,128]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from deputy.audit.log import AuditLog
from deputy.audit.note import NoteSigner, generate_signer_key
from deputy.audit.records import new_record
from deputy.audit.settings import AuditSettings
from deputy.storage.db import Database

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
ORIGIN = "bench.example/deputy-audit"


def record(i: int) -> dict[str, object]:
    return new_record(
        "decision",
        outcome="allow",
        server="demo",
        tool="delete_user",
        user="alice",
        agent="agent-b",
        actors=["agent-b", "agent-a"],
        txn=uuid.uuid4().hex,
        policies=["ops-may-list"],
        arguments={"id": i, "reason": "left the company"},
        token_id=uuid.uuid4().hex,
    )


async def run(log: AuditLog, records: int, concurrency: int) -> tuple[float, float, float, float]:
    latencies: list[float] = []
    remaining = records
    commits_before = log.commits

    async def appender() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            item = record(remaining)
            started = time.perf_counter()
            await log.append(item)
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(appender() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    per_commit = records / max(1, log.commits - commits_before)
    return (
        records / elapsed,
        latencies[len(latencies) // 2] * 1000,
        latencies[int(len(latencies) * 0.99)] * 1000,
        per_commit,
    )


async def bench(url: str, args: argparse.Namespace) -> dict[int, list[tuple[float, float, float, float]]]:
    database = Database(url)
    await database.migrate()
    with tempfile.TemporaryDirectory() as directory:
        settings = AuditSettings(origin=ORIGIN, key_file=Path(directory) / "audit.key")
    log = AuditLog(database.engine, settings, NoteSigner.from_key(generate_signer_key(ORIGIN)))
    await log.start()
    results: dict[int, list[tuple[float, float, float, float]]] = {}
    try:
        await run(log, 2000, 16)  # warm-up: connections, statement caches
        for round_ in range(args.rounds):
            for concurrency in args.concurrency:
                # A single appender waits for every commit: fewer records keep the run short.
                records = args.records if concurrency > 1 else max(1, args.records // 10)
                result = await run(log, records, concurrency)
                results.setdefault(concurrency, []).append(result)
                rate, p50, p99, per_commit = result
                print(
                    f"  round {round_ + 1}, {concurrency:4} appenders: {rate:9,.0f}/s  p50 {p50:7.2f} ms  "
                    f"p99 {p99:7.2f} ms  {per_commit:6.1f} records/commit",
                    flush=True,
                )
    finally:
        await log.stop()
        await database.dispose()
    return results


async def postgres_database() -> str | None:
    try:
        conn = await asyncpg.connect(PG_ADMIN, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return None
    name = f"deputy_bench_{uuid.uuid4().hex[:12]}"
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name


async def drop_postgres(name: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN, timeout=3)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=20000, help="records per run with >1 appender (default 20000)")
    parser.add_argument("--rounds", type=int, default=3, help="runs per backend and concurrency (default 3)")
    parser.add_argument("--concurrency", type=lambda v: [int(c) for c in v.split(",")], default=[1, 16, 128])
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    table: list[tuple[str, int, list[tuple[float, float, float, float]]]] = []
    with tempfile.TemporaryDirectory() as directory:
        print("SQLite (WAL, synchronous=NORMAL)", flush=True)
        for concurrency, runs in asyncio.run(bench(f"sqlite+aiosqlite:///{directory}/bench.db", args)).items():
            table.append(("SQLite", concurrency, runs))
    name = asyncio.run(postgres_database())
    if name is None:
        print("PostgreSQL on 127.0.0.1:5432 is not reachable: skipped", flush=True)
    else:
        print("PostgreSQL", flush=True)
        try:
            url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
            for concurrency, runs in asyncio.run(bench(url, args)).items():
                table.append(("PostgreSQL", concurrency, runs))
        finally:
            asyncio.run(drop_postgres(name))

    print(f"\nDurable audit appends, medians of {args.rounds} runs:\n")
    print("| backend | appenders | records/s | p50 ms | p99 ms | records/commit |")
    print("|---|---|---|---|---|---|")
    for backend, concurrency, runs in table:
        rate, p50, p99, per_commit = (statistics.median(r[i] for r in runs) for i in range(4))
        print(f"| {backend} | {concurrency} | {rate:,.0f} | {p50:.2f} | {p99:.2f} | {per_commit:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
