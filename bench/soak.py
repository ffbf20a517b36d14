"""Soak: Deputy at a steady load for N minutes; do its memory and open descriptors stay flat?

Starts the demo upstream and ``python -m deputy serve`` in front of it exactly as ``bench/tools_call.py``
does (its helpers; SQLite in a temporary data directory), with the audit log on (always) and the demo
Cedar policies deciding every call, then drives ``tools/call add`` at a fixed concurrency in windows of
``--interval`` seconds (each window opens fresh keep-alive connections, so connection churn is part of
the load). After each window it prints a row: elapsed time, calls/s, p50/p99 latency, Deputy's RSS
(``VmRSS``) and its open file descriptors (entries of ``/proc/PID/fd``). At the end a verdict compares
the last third of the samples with the first third, as a slope per minute.

    .venv/bin/python bench/soak.py [--minutes 10] [--interval 30] [--concurrency 8]

With ``--calls N`` the soak is a number of calls instead (issue 16, item 6: a 1,000,000-call run): one row per
``--every`` calls (default 100,000), and the verdict says whether RSS stayed within 10 % of its value after the
first block of calls, at every row (:data:`RSS_FLAT_FRACTION`), next to the growth in MB.

    nice -n 10 .venv/bin/python bench/soak.py --calls 1000000 [--every 100000] [--concurrency 8]

Not a test: nothing here is asserted against a time. Exits 1 if any call failed or Deputy died.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import uvloop
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _load import build_post, run_load
from tools_call import HOST, OK_MARKER, PROTOCOL_VERSION, TOOL_CALL, rss_mb, start_servers, stop

DEMO_POLICIES = Path(__file__).resolve().parent.parent / "deputy" / "demo" / "policies"
# Flat means: the last third's mean within this much of the first third's, per minute between them.
RSS_FLAT_MB_PER_MIN = 1.0
FDS_FLAT_PER_MIN = 0.5
# --calls: flat means no row's RSS above the first block's by more than this fraction of it.
RSS_FLAT_FRACTION = 0.10
console = Console(width=None if sys.stdout.isatty() else 150)


@dataclass(frozen=True)
class Sample:
    elapsed_s: float
    calls: int
    errors: int
    rate: float
    p50_ms: float
    p99_ms: float
    rss_mb: float
    fds: int


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def slope_per_minute(samples: list[Sample], value: str) -> tuple[float, float, float]:
    """(mean over the first third, mean over the last third, change per minute between their centres)."""
    third = max(1, len(samples) // 3)
    first, last = samples[:third], samples[-third:]
    first_mean = statistics.fmean(getattr(s, value) for s in first)
    last_mean = statistics.fmean(getattr(s, value) for s in last)
    minutes = (statistics.fmean(s.elapsed_s for s in last) - statistics.fmean(s.elapsed_s for s in first)) / 60
    return first_mean, last_mean, (last_mean - first_mean) / minutes if minutes > 0 else 0.0


async def soak(request: bytes, port: int, pid: int, args: argparse.Namespace) -> list[Sample]:
    await run_load(HOST, port, request, args.concurrency, OK_MARKER, seconds=args.warmup)
    console.print(f"warm-up {args.warmup:g} s done; RSS {rss_mb(pid):.1f} MB, {open_fds(pid)} fds")
    header = f"{'elapsed':>8} {'calls':>8} {'errors':>6} {'calls/s':>8} {'p50 ms':>7} {'p99 ms':>7} " \
             f"{'RSS MB':>7} {'fds':>5}"
    console.print(header, highlight=False)
    samples: list[Sample] = []
    started = time.monotonic()
    end = started + args.minutes * 60
    while (left := end - time.monotonic()) > 1:
        result = await run_load(HOST, port, request, args.concurrency, OK_MARKER,
                                seconds=min(args.interval, left))
        sample = Sample(time.monotonic() - started, result.calls, result.errors, result.rate,
                        result.percentile_ms(0.5), result.percentile_ms(0.99), rss_mb(pid), open_fds(pid))
        samples.append(sample)
        console.print(f"{sample.elapsed_s:>7.0f}s {sample.calls:>8,} {sample.errors:>6} {sample.rate:>8.0f} "
                      f"{sample.p50_ms:>7.2f} {sample.p99_ms:>7.2f} {sample.rss_mb:>7.1f} {sample.fds:>5}",
                      highlight=False)
        if result.errors:
            console.print(f"[red]{result.errors} failed calls; first: {result.first_error}[/red]")
    return samples


async def soak_calls(request: bytes, port: int, pid: int, args: argparse.Namespace) -> list[Sample]:
    """--calls: blocks of ``--every`` calls until ``--calls``, a row after each."""
    await run_load(HOST, port, request, args.concurrency, OK_MARKER, seconds=args.warmup)
    console.print(f"warm-up {args.warmup:g} s done; RSS {rss_mb(pid):.1f} MB, {open_fds(pid)} fds")
    console.print(f"{'calls':>10} {'elapsed':>8} {'errors':>6} {'calls/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
                  f"{'RSS MB':>7} {'fds':>5}", highlight=False)
    samples: list[Sample] = []
    started = time.monotonic()
    done = 0
    while done < args.calls:
        block = min(args.every, args.calls - done)
        result = await run_load(HOST, port, request, args.concurrency, OK_MARKER, calls=block)
        done += result.calls
        sample = Sample(time.monotonic() - started, result.calls, result.errors, result.rate,
                        result.percentile_ms(0.5), result.percentile_ms(0.99), rss_mb(pid), open_fds(pid))
        samples.append(sample)
        console.print(f"{done:>10,} {sample.elapsed_s:>7.0f}s {sample.errors:>6} {sample.rate:>8.0f} "
                      f"{sample.p50_ms:>7.2f} {sample.p99_ms:>7.2f} {sample.rss_mb:>7.1f} {sample.fds:>5}",
                      highlight=False)
        if result.errors:
            console.print(f"[red]{result.errors} failed calls; first: {result.first_error}[/red]")
        # Some refusals under a starved CPU (a check that cannot be made in time fails closed) are counted and
        # the run goes on: memory is what is measured. A block with no successful call means Deputy is broken.
        if result.ok == 0:
            break
    return samples


def report_calls(samples: list[Sample]) -> bool:
    """--calls: the verdict against the first block; True when every row is within RSS_FLAT_FRACTION of it."""
    first = samples[0].rss_mb
    highest = max(s.rss_mb for s in samples)
    growth = (highest - first) / first
    flat = growth <= RSS_FLAT_FRACTION
    calls, errors = sum(s.calls for s in samples), sum(s.errors for s in samples)
    verdict = "[green]FLAT[/green]" if flat else "[red]GROWING[/red]"
    console.print(f"verdict: {verdict}: RSS after the first block {first:.1f} MB, highest {highest:.1f} MB, last "
                  f"{samples[-1].rss_mb:.1f} MB: {growth:+.1%} (flat within {RSS_FLAT_FRACTION:.0%}); fds "
                  f"{samples[0].fds} → {samples[-1].fds}; {calls:,} calls, {errors} failed")
    return flat


def report(samples: list[Sample]) -> bool:
    """Print the summary table and the verdict; True when RSS and descriptors are flat."""
    table = Table(title="Soak summary: first third vs last third of the samples")
    for column in ("measure", "first third", "last third", "change per minute", "flat if below"):
        table.add_column(column, justify="left" if column == "measure" else "right")
    rss_first, rss_last, rss_slope = slope_per_minute(samples, "rss_mb")
    fds_first, fds_last, fds_slope = slope_per_minute(samples, "fds")
    rate_first, rate_last, rate_slope = slope_per_minute(samples, "rate")
    table.add_row("RSS MB", f"{rss_first:.1f}", f"{rss_last:.1f}", f"{rss_slope:+.2f}", f"{RSS_FLAT_MB_PER_MIN:g}")
    table.add_row("open fds", f"{fds_first:.1f}", f"{fds_last:.1f}", f"{fds_slope:+.2f}", f"{FDS_FLAT_PER_MIN:g}")
    table.add_row("calls/s", f"{rate_first:.0f}", f"{rate_last:.0f}", f"{rate_slope:+.1f}", "-")
    console.print(table)
    flat = rss_slope < RSS_FLAT_MB_PER_MIN and fds_slope < FDS_FLAT_PER_MIN
    calls, errors = sum(s.calls for s in samples), sum(s.errors for s in samples)
    verdict = "[green]FLAT[/green]" if flat else "[red]GROWING[/red]"
    console.print(f"verdict: {verdict}: RSS {rss_slope:+.2f} MB/min ({rss_first:.1f} → {rss_last:.1f} MB), "
                  f"fds {fds_slope:+.2f}/min ({fds_first:.1f} → {fds_last:.1f}); {calls:,} calls, {errors} failed")
    return flat


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the soak (default 10)")
    parser.add_argument("--interval", type=float, default=30.0, help="seconds per printed row (default 30)")
    parser.add_argument("--concurrency", type=int, default=8, help="keep-alive connections (default 8)")
    parser.add_argument("--warmup", type=float, default=10.0, help="seconds of load before sampling (default 10)")
    parser.add_argument("--no-policies", action="store_true", help="forward without the decide stage")
    parser.add_argument("--calls", type=int, default=None,
                        help="a number of calls instead of minutes, a row per --every calls")
    parser.add_argument("--every", type=int, default=100_000, help="calls per row with --calls (default 100000)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="deputy-soak-"))
    try:
        servers = start_servers(work, None, None if args.no_policies else DEMO_POLICIES)
        try:
            console.print(f"Deputy pid {servers.deputy.pid} on :{servers.deputy_port}, audit on, policies "
                          f"{'off' if args.no_policies else DEMO_POLICIES}; c={args.concurrency}, "
                          + (f"{args.calls:,} calls" if args.calls else f"{args.minutes:g} min")
                          + f"; {os.cpu_count()} CPUs; {time.strftime('%Y-%m-%d %H:%M %Z')}; "
                          f"load {os.getloadavg()[0]:.2f}")
            headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
                       "MCP-Protocol-Version": PROTOCOL_VERSION, "Authorization": f"Bearer {servers.token}"}
            request = build_post(HOST, servers.deputy_port, "/mcp/demo", TOOL_CALL, headers)
            run = soak_calls if args.calls else soak
            samples = uvloop.run(run(request, servers.deputy_port, servers.deputy.pid, args))
            alive = servers.deputy.poll() is None
        finally:
            stop(servers.deputy)
            stop(servers.upstream)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if not samples:
        console.print("[red]no samples: the soak was shorter than one interval[/red]")
        return 1
    report_calls(samples) if args.calls else report(samples)
    console.print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    failed = sum(s.errors for s in samples)
    if failed or not alive:
        console.print(f"[red]{failed} calls failed; Deputy {'alive' if alive else 'died'}[/red]")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
