"""The tables ``bench/token_exchange.py`` prints: each run, the medians over rounds against the aim, and the machine."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _load import RunResult
from _token_deputy import AUTH_NAMES, BENCH_DIR, TARGET
from _tools_call_report import fmt, median

console = Console(width=None if sys.stdout.isatty() else 180)


@dataclass
class Measured:
    backend: str
    auth: str
    concurrency: int
    round: int
    grant: str
    result: RunResult
    deputy_cpu: float
    client_cpu: float

    def per_op_ms(self, seconds: float) -> float:
        return 1000 * seconds / self.result.ok if self.result.ok else float("nan")



COLUMNS = ("backend", "auth", "c", "grant")


def print_runs(runs: list[Measured]) -> None:
    table = Table(title="Per run (POST /token; CPU = process time ÷ successful requests)")
    for col in (*COLUMNS[:3], "round", "grant", "ok", "errors", "req/s", "÷ cc", "p50 ms", "p99 ms",
                "Deputy CPU ms/req", "client CPU ms/req"):
        table.add_column(col, justify="left" if col in ("backend", "auth", "grant") else "right")
    cc_rate = {(m.backend, m.auth, m.concurrency, m.round): m.result.rate for m in runs
               if m.grant == "client_credentials"}
    for m in runs:
        base = cc_rate.get((m.backend, m.auth, m.concurrency, m.round), float("nan"))
        table.add_row(m.backend, AUTH_NAMES[m.auth], str(m.concurrency), str(m.round), m.grant,
                      f"{m.result.ok:,}", str(m.result.errors), f"{m.result.rate:.0f}",
                      fmt(m.result.rate / base if base else float("nan")), fmt(m.result.percentile_ms(0.5)),
                      fmt(m.result.percentile_ms(0.99)), fmt(m.per_op_ms(m.deputy_cpu)),
                      fmt(m.per_op_ms(m.client_cpu)))
    console.print(table)


def print_summary(runs: list[Measured], args: argparse.Namespace) -> None:
    table = Table(title=f"Summary: medians over {args.rounds} interleaved round(s) of {args.seconds:g} s per run")
    for col in (*COLUMNS, "req/s", "÷ cc", "p50 ms", "p99 ms", "Deputy CPU ms/req", "1-core ceiling/s",
                "client CPU ms/req"):
        table.add_column(col, justify="left" if col in ("backend", "auth", "grant") else "right")
    verdicts = []
    keys = sorted({(m.backend, m.auth, m.concurrency) for m in runs},
                  key=lambda k: (k[0] != "sqlite", k[1], k[2]))
    for backend, auth, c in keys:
        rows = {}
        for grant in args.grants:
            ms = [m for m in runs if (m.backend, m.auth, m.concurrency, m.grant) == (backend, auth, c, grant)]
            rows[grant] = (median([m.result.rate for m in ms]),
                           median([m.result.percentile_ms(0.5) for m in ms]),
                           median([m.result.percentile_ms(0.99) for m in ms]),
                           median([m.per_op_ms(m.deputy_cpu) for m in ms]),
                           median([m.per_op_ms(m.client_cpu) for m in ms]))
        base = rows.get("client_credentials", (float("nan"),))[0]
        ratio = rows["exchange"][0] / base if "exchange" in rows and base else float("nan")
        for grant, (rate, p50, p99, cpu, client) in rows.items():
            table.add_row(backend, AUTH_NAMES[auth], str(c), grant, f"{rate:.0f}",
                          fmt(ratio) if grant == "exchange" else "1.00", fmt(p50), fmt(p99), fmt(cpu),
                          f"{1000 / cpu:.0f}" if cpu == cpu and cpu > 0 else "-", fmt(client))
        if "exchange" in rows:
            verdicts.append((backend, auth, c, rows["exchange"][0], ratio))
    console.print(table)
    for backend, auth, c, rate, ratio in verdicts:
        ok = "[green]meets[/green]" if rate >= TARGET else "[red]misses[/red]"
        console.print(f"{backend}, {AUTH_NAMES[auth]}, c={c}: {rate:.0f} exchanges/s {ok} the ≥ {TARGET:,.0f}/s aim; "
                      f"{fmt(ratio)} of client credentials")


def argon2_cost() -> float:
    """Milliseconds of one argon2id verification here and now (what an uncached client_secret_basic costs)."""
    from deputy.hashing import _hasher

    stored = _hasher.hash("bench-secret")
    t = time.perf_counter()
    for _ in range(3):
        _hasher.verify(stored, "bench-secret")
    return (time.perf_counter() - t) / 3 * 1000


def machine_line() -> str:
    load = os.getloadavg()
    head = subprocess.run(["git", "-C", str(BENCH_DIR.parent), "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, check=False).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(BENCH_DIR.parent), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, check=False).stdout.strip()
    return (f"{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}; "
            f"{time.strftime('%Y-%m-%d %H:%M %Z')}; commit {head}{' + uncommitted changes' if dirty else ''}")
