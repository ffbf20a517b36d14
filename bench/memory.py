"""Where Deputy's memory goes: RSS of a serving process idle, after warm-up and after a run of calls.

Starts the demo upstream and ``python -m deputy serve`` in front of it exactly as ``bench/tools_call.py`` does
(its helpers; SQLite in a temporary data directory; the demo Cedar policies unless ``--no-policies``), then
prints, at each stage, ``VmRSS`` and the breakdown of ``/proc/PID/smaps_rollup`` (anonymous vs file-backed
pages), and the number of threads. The stages: idle after start, after ``--warmup`` seconds of load at c=8,
after ``--calls`` more calls at ``--concurrency``. ``--repeat N`` starts a fresh Deputy N times and prints the
median of each stage, since a single start varies by a megabyte or two.

Extra environment for Deputy only (to compare a lever without editing code) goes in ``--env NAME=VALUE``
(repeatable), e.g. ``--env MALLOC_ARENA_MAX=2``.

    .venv/bin/python bench/memory.py [--calls 30000] [--concurrency 8] [--repeat 3] [--no-policies] [--env K=V]

Also, without a server: ``--imports`` prints what importing each of the CLI's and the server's entry modules
costs in a fresh interpreter (RSS and modules loaded), which is the floor under every figure above. It runs
outside the working tree, so ``PYTHONPATH=OTHER_TREE`` measures another tree's modules.

Not a test: nothing is asserted against a size. Exits 1 if any call failed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import uvloop
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _load import build_post, run_load
from tools_call import HOST, OK_MARKER, PROTOCOL_VERSION, TOOL_CALL, rss_mb, start_servers, stop

DEMO_POLICIES = Path(__file__).resolve().parent.parent / "deputy" / "demo" / "policies"
STAGES = ("idle after start", "after warm-up", "after the calls")
SMAPS_FIELDS = ("Rss", "Anonymous", "Private_Dirty", "Shared_Clean", "Private_Clean")
console = Console(width=None if sys.stdout.isatty() else 150)

# What a fresh interpreter pays to import each entry point (the CLI's, then the server's).
IMPORT_PROBE = """
import sys, time
def rss():
    with open('/proc/self/status') as fh:
        return next(int(l.split()[1]) for l in fh if l.startswith('VmRSS')) / 1024
t0 = time.process_time()
import {module}
heavy = sorted(m for m in ('mcp', 'sqlalchemy', 'alembic', 'aiohttp', 'cedarpy', 'uvicorn', 'starlette', 'jinja2',
                          'cryptography', 'joserfc', 'opentelemetry', 'prometheus_client') if m in sys.modules)
print(f"{{rss():.1f}} {{len(sys.modules)}} {{time.process_time() - t0:.2f}} {{','.join(heavy)}}")
"""
IMPORT_MODULES = ("deputy.cli.main", "deputy.services", "deputy.app")


def smaps_mb(pid: int) -> dict[str, float]:
    """The fields of ``/proc/PID/smaps_rollup`` named in :data:`SMAPS_FIELDS`, in MB."""
    out: dict[str, float] = {}
    with open(f"/proc/{pid}/smaps_rollup") as fh:
        for line in fh:
            name, _, rest = line.partition(":")
            if name in SMAPS_FIELDS:
                out[name] = int(rest.split()[0]) / 1024
    return out


def threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


async def drive(port: int, token: str, pid: int, args: argparse.Namespace) -> tuple[list[dict[str, float]], int]:
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
               "MCP-Protocol-Version": PROTOCOL_VERSION, "Authorization": f"Bearer {token}"}
    request = build_post(HOST, port, "/mcp/demo", TOOL_CALL, headers)

    def stage() -> dict[str, float]:
        return {"RSS": rss_mb(pid), **smaps_mb(pid), "threads": float(threads(pid))}

    stages = [stage()]
    failed = 0
    result = await run_load(HOST, port, request, 8, OK_MARKER, seconds=args.warmup)
    failed += result.errors
    stages.append(stage())
    result = await run_load(HOST, port, request, args.concurrency, OK_MARKER, calls=args.calls)
    failed += result.errors
    stages.append(stage())
    return stages, failed


def one_start(args: argparse.Namespace) -> tuple[list[dict[str, float]], int]:
    work = Path(tempfile.mkdtemp(prefix="deputy-memory-"))
    saved = dict(os.environ)
    os.environ.update(dict(pair.split("=", 1) for pair in args.env))  # inherited by Deputy (and the upstream)
    try:
        servers = start_servers(work, None, None if args.no_policies else DEMO_POLICIES)
        os.environ.clear()
        os.environ.update(saved)
        try:
            time.sleep(1.0)  # let start-up settle: the idle figure is the process at rest
            return uvloop.run(drive(servers.deputy_port, servers.token, servers.deputy.pid, args))
        finally:
            stop(servers.deputy)
            stop(servers.upstream)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        shutil.rmtree(work, ignore_errors=True)


def imports_table() -> None:
    table = Table(title="Importing an entry module in a fresh interpreter (median of 3)")
    for column in ("module", "RSS MB", "modules", "CPU s", "heavy packages loaded"):
        table.add_column(column, justify="left" if column in ("module", "heavy packages loaded") else "right")
    for module in IMPORT_MODULES:
        runs = []
        for _ in range(3):
            out = subprocess.run([sys.executable, "-c", IMPORT_PROBE.format(module=module)], capture_output=True,
                                 text=True, check=True, cwd=tempfile.gettempdir()).stdout.split()
            runs.append(out)
        rss = statistics.median(float(r[0]) for r in runs)
        cpu = statistics.median(float(r[2]) for r in runs)
        table.add_row(module, f"{rss:.1f}", runs[0][1], f"{cpu:.2f}", runs[0][3] if len(runs[0]) > 3 else "-")
    console.print(table)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=30_000, help="calls after the warm-up (default 30000)")
    parser.add_argument("--concurrency", type=int, default=8, help="connections for the calls (default 8)")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of load at c=8 first (default 5)")
    parser.add_argument("--repeat", type=int, default=1, help="fresh Deputy starts; medians printed (default 1)")
    parser.add_argument("--no-policies", action="store_true", help="forward without the decide stage")
    parser.add_argument("--env", action="append", default=[], help="NAME=VALUE for Deputy's environment")
    parser.add_argument("--imports", action="store_true", help="only the import costs, no server")
    args = parser.parse_args()
    console.print(f"{time.strftime('%Y-%m-%d %H:%M %Z')}; load {os.getloadavg()[0]:.2f}; "
                  f"policies {'off' if args.no_policies else 'demo'}; env {args.env or '-'}")
    if args.imports:
        imports_table()
        return 0
    runs = []
    failed = 0
    for _ in range(args.repeat):
        stages, errors = one_start(args)
        runs.append(stages)
        failed += errors
    table = Table(title=f"Deputy memory, MB (median of {args.repeat} start(s); {args.calls:,} calls at "
                        f"c={args.concurrency} after a {args.warmup:g} s warm-up)")
    columns = ("RSS", *SMAPS_FIELDS[1:], "threads")
    table.add_column("stage")
    for column in columns:
        table.add_column(column, justify="right")
    for index, name in enumerate(STAGES):
        table.add_row(name, *(f"{statistics.median(run[index].get(c, 0.0) for run in runs):.1f}" for c in columns))
    console.print(table)
    console.print(f"load after: {os.getloadavg()[0]:.2f}")
    if failed:
        console.print(f"[red]{failed} calls failed[/red]")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
