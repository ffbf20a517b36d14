"""Benchmark: what the audit stage costs a ``tools/call`` on the real request path, and how many durable
records per second that makes.

Starts the demo upstream and two ``deputy serve`` processes in front of it, identical but for the
audit stage (``bench/_deputy_without_audit.py`` gives the second one that records nothing), each with its own SQLite
(or, with ``--postgres URL``, its own PostgreSQL database). Drives raw JSON-RPC ``tools/call add``
POSTs at both, interleaved round by round, and prints calls/s, p50/p99, the ratio with/without audit,
and the audit records committed per second (counted in the log: a decision and a call outcome per call).

    .venv/bin/python bench/audit_path.py [--seconds 5] [--rounds 3] [--concurrency 8,32]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import uvloop
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _load import build_post, run_load
from tools_call import (
    BENCH_DIR,
    HOST,
    OK_MARKER,
    PROTOCOL_VERSION,
    TOOL_CALL,
    bench_token,
    cpu_seconds,
    free_port,
    stop,
    wait_http,
    write_config,
)

console = Console(width=None if sys.stdout.isatty() else 150)


@dataclass
class Target:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    data_dir: Path
    request: bytes

    def leaves(self) -> int:
        with sqlite3.connect(self.data_dir / "deputy.db") as db:
            return int(db.execute("SELECT count(*) FROM audit_leaves").fetchone()[0])


def start_deputy(work: Path, name: str, upstream_port: int, command: list[str]) -> Target:
    port = free_port()
    public_url = f"http://{HOST}:{port}"
    home = work / name
    home.mkdir()
    config = home / "deputy.toml"
    write_config(config, public_url, port, upstream_port)
    data_dir = home / "data"
    env = {"PATH": "/usr/bin:/bin", "DEPUTY_CONFIG": str(config), "DEPUTY_DATA_DIR": str(data_dir)}
    log = home / "deputy.log"
    process = subprocess.Popen(command, env=env, cwd=home, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    wait_http(f"{public_url}/healthz", process, f"deputy ({name})", log)
    token = bench_token(data_dir, public_url)
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
               "MCP-Protocol-Version": PROTOCOL_VERSION, "Authorization": f"Bearer {token}"}
    return Target(name, process, port, data_dir, build_post(HOST, port, "/mcp/demo", TOOL_CALL, headers))


Row = tuple[str, int, float, float, float, float, float]  # target, c, calls/s, p50, p99, records/s, CPU ms/call


async def measure(targets: list[Target], args: argparse.Namespace) -> list[Row]:
    rows = []
    for target in targets:  # warm-up
        await run_load(HOST, target.port, target.request, 8, OK_MARKER, seconds=args.warmup)
    for concurrency in args.concurrency:
        for round_ in range(args.rounds):
            order = targets if round_ % 2 == 0 else list(reversed(targets))
            for target in order:
                before, cpu_before = target.leaves(), cpu_seconds(target.process.pid)
                result = await run_load(HOST, target.port, target.request, concurrency, OK_MARKER,
                                        seconds=args.seconds)
                await asyncio.sleep(0.3)  # the last call outcomes are appended after their answers
                records, cpu = target.leaves() - before, cpu_seconds(target.process.pid) - cpu_before
                if result.errors:
                    raise SystemExit(f"{target.name}: {result.errors} failed calls: {result.first_error}")
                rows.append((target.name, concurrency, result.rate, result.percentile_ms(0.5),
                             result.percentile_ms(0.99), records / args.seconds, 1000 * cpu / max(result.ok, 1)))
    return rows


def report(rows: list[Row], args: argparse.Namespace) -> None:
    table = Table(title=f"tools/call add through Deputy, medians of {args.rounds} interleaved {args.seconds:g} s runs")
    for column in ("c", "audit stage", "calls/s", "÷ without", "p50 ms", "p99 ms", "Deputy CPU ms/call",
                   "durable records/s"):
        table.add_column(column, justify="left" if column == "audit stage" else "right")
    for concurrency in args.concurrency:
        medians = {}
        for name in ("with", "without"):
            runs = [row for row in rows if row[0] == name and row[1] == concurrency]
            medians[name] = [statistics.median(row[i] for row in runs) for i in (2, 3, 4, 5, 6)]
        for name in ("with", "without"):
            rate, p50, p99, records, cpu = medians[name]
            ratio = rate / medians["without"][0]
            table.add_row(str(concurrency), name, f"{rate:.0f}", f"{ratio:.2f}", f"{p50:.2f}", f"{p99:.2f}",
                          f"{cpu:.2f}", f"{records:.0f}" if name == "with" else "-")
    console.print(table)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--concurrency", default="8,32")
    args = parser.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    with tempfile.TemporaryDirectory(prefix="deputy-audit-bench-") as directory:
        work = Path(directory)
        upstream_port = free_port()
        upstream_log = work / "upstream.log"
        upstream = subprocess.Popen([sys.executable, str(BENCH_DIR / "_upstream.py"), str(upstream_port)],
                                    stdout=upstream_log.open("wb"), stderr=subprocess.STDOUT)
        targets: list[Target] = []
        try:
            wait_http(f"http://{HOST}:{upstream_port}/mcp", upstream, "demo upstream", upstream_log)
            targets.append(start_deputy(work, "with", upstream_port, [sys.executable, "-m", "deputy", "serve"]))
            targets.append(start_deputy(work, "without", upstream_port,
                                        [sys.executable, str(BENCH_DIR / "_deputy_without_audit.py"), "serve"]))
            rows = uvloop.run(measure(targets, args))
            report(rows, args)
            if targets[1].leaves() > targets[0].leaves() // 10:
                raise SystemExit("the baseline recorded calls: its audit stage was not swapped")
        finally:
            for target in targets:
                stop(target.process)
            stop(upstream)
    return 0


if __name__ == "__main__":
    sys.exit(main())
