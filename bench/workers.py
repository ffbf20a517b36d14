"""Benchmark: ``deputy serve`` with 1 worker against ``--workers N``, under the same ``tools/call`` load.

Starts the demo upstream and two Deputies in front of it (one with ``workers = 1``, one with ``workers = N``, each
on its own SQLite data directory), then drives raw JSON-RPC ``tools/call add`` POSTs at each, interleaved round by
round (who goes first alternates), and prints calls/s, p50/p99 latency and Deputy CPU per call — summed over the
Deputy's whole process tree, parent and workers, from /proc — with the medians over the rounds and the load average
before and after. The helpers are bench/tools_call.py's and bench/_load.py's.

    .venv/bin/python bench/workers.py [--workers 2] [--seconds 5] [--rounds 3] [--concurrency 8,32]

Exits 1 if any call failed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import uvloop
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _load import build_post, one_call, run_load
from _tools_call_report import fmt, median
from tools_call import (
    BENCH_DIR,
    HOST,
    OK_MARKER,
    PROTOCOL_VERSION,
    TOOL_CALL,
    bench_token,
    console,
    cpu_seconds,
    free_port,
    stop,
    wait_http,
    write_config,
)


@dataclass
class Target:
    name: str
    workers: int
    process: subprocess.Popen[bytes]
    port: int
    raw: bytes

    def pids(self) -> list[int]:
        """The Deputy's processes: the one started, and its workers (none with one worker)."""
        pid = self.process.pid
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        return [pid, *(int(child) for child in children)]

    def cpu(self) -> float:
        total = 0.0
        for pid in self.pids():
            with contextlib.suppress(OSError):  # a process gone between the listing and the read
                total += cpu_seconds(pid)
        return total


@dataclass
class Run:
    target: str
    concurrency: int
    round: int
    rate: float
    p50: float
    p99: float
    cpu_ms: float
    upstream_cpu_ms: float
    errors: int


def start_deputy(work: Path, upstream_port: int, workers: int) -> Target:
    port = free_port()
    public_url = f"http://{HOST}:{port}"
    work.mkdir()
    config = work / "deputy.toml"
    write_config(config, public_url, port, upstream_port)
    env = {**os.environ, "DEPUTY_CONFIG": str(config), "DEPUTY_DATA_DIR": str(work / "data"),
           "DEPUTY_WORKERS": str(workers)}
    env.pop("DEPUTY_DATABASE_URL", None)
    log = work / "deputy.log"
    process = subprocess.Popen([sys.executable, "-m", "deputy", "serve"], env=env, cwd=work,
                               stdout=log.open("wb"), stderr=subprocess.STDOUT)
    wait_http(f"{public_url}/healthz", process, f"deputy serve --workers {workers}", log, timeout=180)
    token = bench_token(work / "data", public_url)
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
               "MCP-Protocol-Version": PROTOCOL_VERSION, "Authorization": f"Bearer {token}"}
    raw = build_post(HOST, port, "/mcp/demo", TOOL_CALL, headers)
    name = f"{workers} worker{'s' if workers > 1 else ''}"
    return Target(name, workers, process, port, raw)


async def measure(target: Target, upstream_pid: int, concurrency: int, round_: int, seconds: float) -> Run:
    d0, u0 = target.cpu(), cpu_seconds(upstream_pid)
    result = await run_load(HOST, target.port, target.raw, concurrency, OK_MARKER, seconds=seconds)
    d1, u1 = target.cpu(), cpu_seconds(upstream_pid)
    ok = result.ok or 1
    return Run(target.name, concurrency, round_, result.rate, result.percentile_ms(0.5), result.percentile_ms(0.99),
               1000 * (d1 - d0) / ok, 1000 * (u1 - u0) / ok, result.errors)


async def bench(targets: list[Target], upstream_pid: int, args: argparse.Namespace) -> list[Run]:
    for target in targets:
        status, body = await one_call(HOST, target.port, target.raw)
        if status != 200 or OK_MARKER not in body:
            raise SystemExit(f"{target.name}: unexpected first answer: HTTP {status} {body[:300]!r}")
        await run_load(HOST, target.port, target.raw, 8, OK_MARKER, seconds=args.warmup)
    runs = []
    for concurrency in args.concurrency:
        for round_ in range(1, args.rounds + 1):
            order = targets if round_ % 2 else list(reversed(targets))
            for target in order:
                runs.append(await measure(target, upstream_pid, concurrency, round_, args.seconds))
    return runs


def report(runs: list[Run], args: argparse.Namespace, load_before: str, load_after: str) -> None:
    table = Table(title="Per run (tools/call add; Deputy CPU = parent + workers, ÷ successful calls)")
    for column in ("c", "round", "target", "calls/s", "p50 ms", "p99 ms", "Deputy CPU ms/call",
                   "upstream CPU ms/call", "errors"):
        table.add_column(column, justify="left" if column == "target" else "right")
    for run in runs:
        table.add_row(str(run.concurrency), str(run.round), run.target, f"{run.rate:.0f}", fmt(run.p50), fmt(run.p99),
                      fmt(run.cpu_ms), fmt(run.upstream_cpu_ms), str(run.errors))
    console.print(table)
    summary = Table(title=f"Medians over {args.rounds} interleaved rounds of {args.seconds:g} s")
    for column in ("c", "target", "calls/s", "÷ 1 worker", "÷ 1 worker, paired", "p50 ms", "p99 ms",
                   "Deputy CPU ms/call", "upstream CPU ms/call"):
        summary.add_column(column, justify="left" if column == "target" else "right")
    for concurrency in args.concurrency:
        names = list(dict.fromkeys(run.target for run in runs))
        base = median([r.rate for r in runs if r.concurrency == concurrency and r.target == names[0]])
        for name in names:
            mine = [r for r in runs if r.concurrency == concurrency and r.target == name]
            rate = median([r.rate for r in mine])
            # The ratio within each round (the two ran back to back, under the same load), then its median.
            first = {r.round: r.rate for r in runs if r.concurrency == concurrency and r.target == names[0]}
            paired = median([r.rate / first[r.round] for r in mine])
            summary.add_row(str(concurrency), name, f"{rate:.0f}", fmt(rate / base), fmt(paired),
                            fmt(median([r.p50 for r in mine])),
                            fmt(median([r.p99 for r in mine])), fmt(median([r.cpu_ms for r in mine])),
                            fmt(median([r.upstream_cpu_ms for r in mine])))
    console.print(summary)
    console.print(f"load average before: {load_before}; after: {load_after}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=lambda text: [int(c) for c in text.split(",")], default=[8, 32])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="deputy-bench-workers-") as tmp:
        work = Path(tmp)
        upstream_port = free_port()
        up_log = work / "upstream.log"
        up_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        upstream = subprocess.Popen([sys.executable, str(BENCH_DIR / "_upstream.py"), str(upstream_port)],
                                    env=up_env, stdout=up_log.open("wb"), stderr=subprocess.STDOUT)
        targets: list[Target] = []
        try:
            wait_http(f"http://{HOST}:{upstream_port}/mcp", upstream, "demo upstream", up_log)
            for workers in (1, args.workers):
                targets.append(start_deputy(work / f"w{workers}", upstream_port, workers))
            load_before = " ".join(f"{x:.2f}" for x in os.getloadavg())
            runs = uvloop.run(bench(targets, upstream.pid, args))
            load_after = " ".join(f"{x:.2f}" for x in os.getloadavg())
        finally:
            for target in targets:
                stop(target.process)
            stop(upstream)
    report(runs, args, load_before, load_after)
    return 1 if any(run.errors for run in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
