"""Benchmark: does the audit log's append rate hold as the tree grows, and is ``audit verify`` linear in its size?

RFC 9162 §2.1: appending leaf ``n`` touches only the compact range (the right edge of the tree, O(log n) hashes)
and writes the ~1 perfect-subtree node it completes (:mod:`deputy.audit.log_plan`), so the append rate should be
flat from the first record to the ten-millionth; a verify reads every leaf once, so its time should grow linearly.

The log is built with Deputy's own batch append path, not through the gateway (ten million calls would take days on
this machine): each record is a realistic ``decision`` (``new_record`` + ``canonical``, as ``AuditLog.append`` does
in the caller's task), ``--batch`` records at a time go through :func:`deputy.audit.log_plan.plan_batch` in one
sequencer transaction (:class:`deputy.audit.sequencer.Sequencer`: on SQLite the one-trip writer thread, on
PostgreSQL ``pg_advisory_xact_lock`` + inserts), and after each batch ``AuditLog.sign_checkpoint`` signs the head,
so there is a checkpoint every ``--batch`` records (production signs every 1,000 by default). The append rate is
printed for each tenth of the build (records ÷ wall time of that tenth): a rate that falls as the tree grows
would show there. Then the whole log is verified with ``verify_database`` on a read-only engine
(:func:`deputy.audit.verify.readonly.open_readonly`), exactly what ``deputy audit verify`` runs.

    .venv/bin/python bench/audit_scale.py --records 100000,1000000 [--backend sqlite|postgresql] [--dir /tmp]

Each size is a fresh database (removed afterwards); ``--keep`` leaves the SQLite file for inspection.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from deputy.audit.log import AuditLog
from deputy.audit.log_plan import Queued, plan_batch
from deputy.audit.merkle import leaf_hash
from deputy.audit.note import NoteSigner, generate_signer_key
from deputy.audit.records import canonical, new_record
from deputy.audit.sequencer import Sequencer
from deputy.audit.settings import AuditSettings
from deputy.audit.verify import verify_database
from deputy.audit.verify.readonly import open_readonly
from deputy.storage.db import Database

sys.path.insert(0, str(Path(__file__).resolve().parent))
from audit_append import drop_postgres, postgres_database

ORIGIN = "bench.example/deputy-audit"
DECILES = 10


def decision(i: int) -> bytes:
    """One realistic decision record's canonical bytes (~0.4 kB), as the gateway's audit stage writes it."""
    return canonical(new_record(
        "decision", server="demo", decision_id=uuid.uuid4().hex, outcome="allow" if i % 5 else "deny",
        method="tools/call", tool="delete_user", user=f"user-{i % 97}", agent=f"agent-{i % 13}",
        actors=[f"agent-{i % 13}"], txn=f"txn-{i // 10}", token_id=uuid.uuid4().hex, policies=["ops-may-list"],
        policy_version="v1", schema_version="s1", errors=[], approval_id=None,
        arguments={"id": i, "reason": "left the company"},
    ))


async def build(url: str, records: int, batch: int, signer: NoteSigner,
                key_dir: Path) -> tuple[list[float], list[float]]:
    """Append ``records`` in batches through the sequencer, a checkpoint after each; the rate of each tenth and
    its process CPU µs per record (all threads: the SQLite writer thread included)."""
    database = Database(url)
    await database.migrate()
    settings = AuditSettings(origin=ORIGIN, key_file=key_dir / "audit.key")
    log = AuditLog(database.engine, settings, signer)
    sequencer = Sequencer(database.engine, settings.append_timeout_ms)
    loop = asyncio.get_running_loop()
    rates: list[float] = []
    cpu_us: list[float] = []
    tenth = max(batch, records // DECILES)
    written, mark, mark_at, mark_cpu = 0, 0, time.perf_counter(), time.process_time()
    try:
        while written < records:
            entries = [decision(written + k) for k in range(min(batch, records - written))]
            queued = [Queued(e, leaf_hash(e), loop.create_future()) for e in entries]
            await sequencer.commit(functools.partial(plan_batch, batch=queued), int(time.time()))
            await log.sign_checkpoint()
            written += len(entries)
            if written - mark >= tenth or written == records:
                now, cpu = time.perf_counter(), time.process_time()
                rates.append((written - mark) / (now - mark_at))
                cpu_us.append(1e6 * (cpu - mark_cpu) / (written - mark))
                print(f"    {written:>12,} records  {rates[-1]:9,.0f}/s  {cpu_us[-1]:6.1f} µs CPU/record in the last "
                      f"{written - mark:,} (load {os.getloadavg()[0]:.2f})", flush=True)
                mark, mark_at, mark_cpu = written, now, cpu
    finally:
        await sequencer.close()
        await database.dispose()
    return rates, cpu_us


def cpu_with_children() -> float:
    """CPU seconds of this process and its reaped children (verify's worker processes, once shut down)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


async def verify(url: str, signer: NoteSigner) -> tuple[float, float, bool, int, int]:
    """(wall s, CPU s, ok, leaves, worker processes) of ``verify_database`` on a read-only engine."""
    engine = open_readonly(url)
    cpu = cpu_with_children()
    try:
        report = await verify_database(engine, signer.verifier())
    finally:
        await engine.dispose()
    cpu = cpu_with_children() - cpu
    for problem in report.problems[:5]:
        print("   ", problem.message)
    return report.seconds, cpu, report.ok, report.leaves, report.workers


def disk_use(path: Path) -> float:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file()) / 1e9


async def one_size(backend: str, records: int, args: argparse.Namespace) -> dict[str, object]:
    signer = NoteSigner.from_key(generate_signer_key(ORIGIN))
    directory = Path(tempfile.mkdtemp(prefix="deputy-audit-scale-", dir=args.dir))
    pg_name: str | None = None
    try:
        if backend == "sqlite":
            url = f"sqlite+aiosqlite:///{directory}/audit.db"
        else:
            pg_name = await postgres_database()
            if pg_name is None:
                raise SystemExit("PostgreSQL on 127.0.0.1:5432 is not reachable")
            url = f"postgresql+asyncpg://postgres@127.0.0.1:5432/{pg_name}"
        load = os.getloadavg()[0]
        print(f"{backend}, {records:,} records (load {load:.2f})", flush=True)
        started = time.perf_counter()
        rates, cpu_us = await build(url, records, args.batch, signer, directory)
        built = time.perf_counter() - started
        size_gb = disk_use(directory) if backend == "sqlite" else float("nan")
        load_verify = os.getloadavg()[0]
        seconds, cpu, ok, leaves, workers = await verify(url, signer)
        print(f"    verified {leaves:,} leaves in {seconds:.1f} s ({leaves / seconds:,.0f}/s, {cpu:.1f} s CPU, "
              f"{workers} workers), ok={ok} (load {os.getloadavg()[0]:.2f})", flush=True)
        return {"backend": backend, "records": records, "build_s": built, "rates": rates, "cpu_us": cpu_us,
                "verify_s": seconds,
                "verify_cpu": cpu, "ok": ok, "gb": size_gb, "load_build": load, "load_verify": load_verify}
    finally:
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)
        if pg_name is not None:
            await drop_postgres(pg_name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", default="100000,1000000", help="comma-separated log sizes")
    parser.add_argument("--batch", type=int, default=1000, help="records per append transaction (and checkpoint)")
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--dir", default=None, help="where the SQLite files go (default: the system temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the SQLite directory")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    results = [asyncio.run(one_size(args.backend, int(n), args)) for n in args.records.split(",")]
    print("\n| backend | records | append records/s: first tenth / median / last tenth "
          "| append CPU µs/record: first / median / last tenth | build s | DB GB "
          "| verify s | verify records/s | verify CPU µs/record | ok | load (build / verify) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        rates: list[float] = r["rates"]  # type: ignore[assignment]
        cpu_us: list[float] = r["cpu_us"]  # type: ignore[assignment]
        n: int = r["records"]  # type: ignore[assignment]
        v: float = r["verify_s"]  # type: ignore[assignment]
        v_cpu: float = r["verify_cpu"]  # type: ignore[assignment]
        print(f"| {r['backend']} | {n:,} | {rates[0]:,.0f} / {statistics.median(rates):,.0f} / {rates[-1]:,.0f} "
              f"| {cpu_us[0]:.1f} / {statistics.median(cpu_us):.1f} / {cpu_us[-1]:.1f} "
              f"| {r['build_s']:.0f} | {r['gb']:.2f} | {v:.1f} | {n / v:,.0f} | {1e6 * v_cpu / n:.1f} | {r['ok']} "
              f"| {r['load_build']:.2f} / {r['load_verify']:.2f} |")
    return 0 if all(r["ok"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
