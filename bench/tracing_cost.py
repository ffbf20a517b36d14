"""Benchmark: what traces cost a ``tools/call`` through Deputy (issue 13, item 2).

Starts two Deputys in front of their own demo upstreams (as bench/tools_call.py does): one with tracing off, one
exporting every span by OTLP/HTTP to a sink (a process of this script that answers every export 200). Drives
``tools/call add`` at both, rounds interleaved, in four modes:

- ``off``: tracing off, no ``traceparent`` (the default; nothing of tracing runs but one header look-up);
- ``off + traceparent``: tracing off, the client sends one (parsed, a context made, Deputy's sent upstream, the
  trace id in the audit records; nothing exported);
- ``on``: tracing on, no ``traceparent`` (a new trace per call, five spans exported);
- ``on + traceparent``: tracing on, the client's trace continued.

Prints Deputy's CPU per call (process time of the Deputy process, the SDK's export thread included) and latency.

    .venv/bin/python bench/tracing_cost.py [--seconds S] [--concurrency C] [--rounds R]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import uvloop
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _load import build_post, run_load
from _tools_call_report import median
from tools_call import (
    HOST,
    OK_MARKER,
    PROTOCOL_VERSION,
    TOOL_CALL,
    Servers,
    console,
    cpu_seconds,
    free_port,
    start_servers,
    stop,
    wait_http,
)

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
MODES = ("off", "off + traceparent", "on", "on + traceparent")


def sink(port: int) -> None:
    """An OTLP/HTTP endpoint that accepts everything (an empty ExportTraceServiceResponse is zero bytes)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return None

    ThreadingHTTPServer((HOST, port), Handler).serve_forever()


def start_deputy(work: Path, environ: dict[str, str]) -> Servers:
    """bench/tools_call.py's servers, Deputy started with ``environ`` added to this process's environment."""
    saved = dict(os.environ)
    os.environ.update(environ)
    try:
        return start_servers(work, None)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def request(servers: Servers, traceparent: bool) -> bytes:
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
               "MCP-Protocol-Version": PROTOCOL_VERSION, "Authorization": f"Bearer {servers.token}"}
    if traceparent:
        headers["traceparent"] = TRACEPARENT
    return build_post(HOST, servers.deputy_port, "/mcp/demo", TOOL_CALL, headers)


async def measure(servers: Servers, raw: bytes, concurrency: int, seconds: float) -> tuple[float, float, int]:
    """(Deputy CPU ms per call, p50 ms, failed calls) of one run."""
    before = cpu_seconds(servers.deputy.pid)
    result = await run_load(HOST, servers.deputy_port, raw, concurrency, OK_MARKER, seconds=seconds)
    spent = cpu_seconds(servers.deputy.pid) - before
    per_call = 1000 * spent / result.ok if result.ok else float("nan")
    return per_call, result.percentile_ms(0.5), result.errors


async def bench(off: Servers, on: Servers, args: argparse.Namespace) -> int:
    targets = {"off": (off, request(off, False)), "off + traceparent": (off, request(off, True)),
               "on": (on, request(on, False)), "on + traceparent": (on, request(on, True))}
    for servers, raw in targets.values():
        await run_load(HOST, servers.deputy_port, raw, args.concurrency, OK_MARKER, seconds=args.warmup)
    cpu: dict[str, list[float]] = {mode: [] for mode in MODES}
    p50: dict[str, list[float]] = {mode: [] for mode in MODES}
    failed = 0
    for round_ in range(args.rounds):
        order = MODES if round_ % 2 == 0 else tuple(reversed(MODES))
        for mode in order:
            servers, raw = targets[mode]
            per_call, latency, errors = await measure(servers, raw, args.concurrency, args.seconds)
            cpu[mode].append(per_call)
            p50[mode].append(latency)
            failed += errors
    table = Table(title=f"tools/call add through Deputy, c={args.concurrency}, median of {args.rounds} rounds")
    for column in ("mode", "Deputy CPU ms/call", "vs off", "p50 ms"):
        table.add_column(column, justify="left" if column == "mode" else "right")
    base = median(cpu["off"])
    for mode in MODES:
        spent = median(cpu[mode])
        table.add_row(mode, f"{spent:.3f}", f"{spent - base:+.3f}", f"{median(p50[mode]):.2f}")
    console.print(table)
    if failed:
        console.print(f"[bold red]{failed} calls failed[/bold red]")
        return 1
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="seconds per run (default 5)")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of warm-up per mode (default 2)")
    parser.add_argument("--concurrency", type=int, default=8, help="connections (default 8)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each mode once per round (default 3)")
    parser.add_argument("--sink", type=int, help=argparse.SUPPRESS)  # run as the OTLP sink on this port
    args = parser.parse_args()
    if args.sink is not None:
        sink(args.sink)
        return 0
    sink_port = free_port()
    sink_process = subprocess.Popen([sys.executable, __file__, "--sink", str(sink_port)])
    servers: list[Servers] = []
    with tempfile.TemporaryDirectory(prefix="deputy-bench-traces-") as temp:
        try:
            deadline = time.monotonic() + 30
            while True:  # the sink answers 501 to a GET: it is up
                try:
                    wait_http(f"http://{HOST}:{sink_port}/", sink_process, "OTLP sink", Path(os.devnull), 1)
                    break
                except RuntimeError:
                    if time.monotonic() > deadline:
                        raise
            (Path(temp) / "off").mkdir()
            (Path(temp) / "on").mkdir()
            servers.append(start_deputy(Path(temp) / "off", {"OTEL_SDK_DISABLED": "true"}))
            servers.append(start_deputy(Path(temp) / "on", {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{HOST}:{sink_port}",
                                                            "OTEL_SDK_DISABLED": "false"}))
            return uvloop.run(bench(servers[0], servers[1], args))
        finally:
            for started in servers:
                stop(started.deputy)
                stop(started.upstream)
            stop(sink_process)


if __name__ == "__main__":
    sys.exit(main())
