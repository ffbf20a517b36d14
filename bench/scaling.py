"""Benchmark: how Deputy's cost grows with concurrency and with the size of the policy set (issue 16, item 2).

Everything on: a real ``deputy serve`` (bearer auth with the revocation check, Cedar decisions, the durable audit
log on SQLite, metrics) in front of the demo upstream, the same processes, token and raw ``tools/call add`` as
``bench/tools_call.py``, whose helpers this imports.

- ``--concurrency 8,32,128,512``: for each c, ``--rounds`` interleaved rounds, each a run direct to the upstream
  and a run through Deputy (who goes first alternates), with the demo policies (``deputy/demo/policies``). Per c:
  medians of calls/s, p99 latency, Deputy CPU ms/call, the ratio to direct, and the load average seen.
- ``--policy-counts 10,100,1000``: one Deputy per set size (the demo policies plus generated ones,
  ``bench/policy_sets.py``; none of the generated ones changes a decision of the benchmark's call), each in front
  of its own upstream; every round runs each of them in turn at ``--policy-concurrency`` (default 8): Deputy CPU
  ms/call, and the same divided by the upstream's CPU per call in that run (the upstream's work is identical in
  every run, so that ratio steadies the figure on a loaded machine).

The connection caps: the load client opens its c connections before the clock starts; Deputy's listener admits
``[limits] max_connections`` (default 4096) connections, lowered to fit the descriptor limit
(:func:`deputy.listener.listener_budget`), which the script prints; the upstream (uvicorn) has no cap of its own.

    .venv/bin/python bench/scaling.py [--concurrency 8,32,128,512] [--rounds 3] [--seconds 5]
    .venv/bin/python bench/scaling.py --concurrency '' --policy-counts 10,100,1000 --rounds 5

Exits 1 if any call failed.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _tools_call_report import Measured, fmt, median
from policy_sets import write_policy_set
from tools_call import Bench, Servers, console, start_servers, stop

from deputy.limits import LimitSettings
from deputy.listener import listener_budget
from deputy.starter import DEMO_POLICY_DIR


@dataclass
class Run:
    measured: Measured
    load: float  # 1-minute load average right after the run

    @property
    def deputy_ms(self) -> float:
        return self.measured.per_call_ms(self.measured.proxy_cpu)

    @property
    def upstream_ms(self) -> float:
        return self.measured.per_call_ms(self.measured.upstream_cpu)


async def timed(bench: Bench, name: str, concurrency: int, round_: int, seconds: float) -> Run:
    measured = await bench.run(name, concurrency, round_, seconds=seconds)
    run = Run(measured, os.getloadavg()[0])
    r = measured.result
    deputy_ms = fmt(run.deputy_ms) if name != "direct" else "-"
    console.print(f"  c={concurrency:<4} round {round_} {name:<14} {r.rate:7.0f}/s  "
                  f"p99 {fmt(r.percentile_ms(0.99)):>8} ms  Deputy {deputy_ms:>5} ms/call  load {run.load:.2f}")
    return run


async def by_concurrency(servers: Servers, args: argparse.Namespace) -> tuple[list[Run], int]:
    bench = Bench(servers)
    await bench.check_first_calls()
    for name in ("direct", "deputy"):
        await bench.run(name, 8, seconds=args.warmup)
    runs: list[Run] = []
    for c in args.concurrency:
        for r in range(1, args.rounds + 1):
            for name in ("direct", "deputy") if r % 2 else ("deputy", "direct"):
                runs.append(await timed(bench, name, c, r, args.seconds))
    return runs, bench.failures


def print_concurrency(runs: list[Run], args: argparse.Namespace) -> None:
    print(f"\nmedians of {args.rounds} interleaved rounds of {args.seconds:g} s; everything on "
          "(auth, Cedar with deputy/demo/policies, audit):\n")
    print("| c | direct calls/s | direct p99 ms | Deputy calls/s | Deputy p99 ms | ÷ direct | Deputy CPU ms/call "
          "| load (1 min) |")
    print("|---|---|---|---|---|---|---|---|")
    for c in args.concurrency:
        direct = [x for x in runs if x.measured.concurrency == c and x.measured.target == "direct"]
        deputy = [x for x in runs if x.measured.concurrency == c and x.measured.target == "deputy"]
        rate_d, rate_g = (median([x.measured.result.rate for x in xs]) for xs in (direct, deputy))
        p99_d, p99_g = (median([x.measured.result.percentile_ms(0.99) for x in xs]) for xs in (direct, deputy))
        loads = [x.load for x in direct + deputy]
        print(f"| {c} | {rate_d:,.0f} | {fmt(p99_d, 1)} | {rate_g:,.0f} | {fmt(p99_g, 1)} | {rate_g / rate_d:.2f} "
              f"| {fmt(median([x.deputy_ms for x in deputy]))} | {min(loads):.1f}-{max(loads):.1f} |")


async def by_policy_count(sets: dict[int, Servers], args: argparse.Namespace) -> tuple[list[tuple[int, Run]], int]:
    benches = {count: Bench(servers) for count, servers in sets.items()}
    for bench in benches.values():
        await bench.check_first_calls()
        await bench.run("deputy", args.policy_concurrency, seconds=args.warmup)
    runs: list[tuple[int, Run]] = []
    counts = list(sets)
    for r in range(1, args.rounds + 1):
        for count in counts if r % 2 else counts[::-1]:
            runs.append((count, await timed(benches[count], "deputy", args.policy_concurrency, r, args.seconds)))
    return runs, sum(b.failures for b in benches.values())


def print_policy_counts(runs: list[tuple[int, Run]], args: argparse.Namespace) -> None:
    print(f"\nthrough the gateway, c={args.policy_concurrency}, medians of {args.rounds} interleaved rounds of "
          f"{args.seconds:g} s:\n")
    print("| policies | calls/s | Deputy CPU ms/call | ÷ smallest set | Deputy ÷ upstream CPU per call "
          "| ÷ smallest set | load (1 min) |")
    print("|---|---|---|---|---|---|---|")
    smallest = min(args.policy_counts)
    base_ms = median([run.deputy_ms for count, run in runs if count == smallest])
    base_ratio = median([run.deputy_ms / run.upstream_ms for count, run in runs if count == smallest])
    for count in args.policy_counts:
        mine = [run for c, run in runs if c == count]
        ms = median([run.deputy_ms for run in mine])
        ratio = median([run.deputy_ms / run.upstream_ms for run in mine])
        loads = [run.load for run in mine]
        print(f"| {count:,} | {median([run.measured.result.rate for run in mine]):,.0f} | {fmt(ms)} "
              f"| {ms / base_ms:.2f} | {fmt(ratio)} | {ratio / base_ratio:.2f} "
              f"| {min(loads):.1f}-{max(loads):.1f} |")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concurrency", default="8,32,128,512", help="comma-separated; '' skips this part")
    p.add_argument("--policy-counts", default="", help="comma-separated policy set sizes, e.g. 10,100,1000")
    p.add_argument("--policy-concurrency", type=int, default=8)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--keep", action="store_true", help="keep the work directory (the servers' logs)")
    args = p.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",") if c]
    args.policy_counts = [int(c) for c in args.policy_counts.split(",") if c]
    return args


def main() -> int:
    args = parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    budget = listener_budget(LimitSettings(), hard if hard != resource.RLIM_INFINITY else soft)
    console.print(f"descriptors: soft {soft}, hard {hard}; Deputy's listener (default \\[limits]) admits "
                  f"{budget.max_connections} connections, backlog {budget.backlog}; {os.cpu_count()} CPUs; "
                  f"{time.strftime('%Y-%m-%d %H:%M')}; load {os.getloadavg()}")
    if args.concurrency and max(args.concurrency) > min(budget.max_connections, soft - 64):
        raise SystemExit(f"c={max(args.concurrency)} is beyond the connections the client or Deputy may open")
    failures = 0
    work = Path(tempfile.mkdtemp(prefix="deputy-scaling-"))
    try:
        if args.concurrency:
            (work / "c").mkdir()
            servers = start_servers(work / "c", None, DEMO_POLICY_DIR)
            try:
                runs, failed = uvloop.run(by_concurrency(servers, args))
                failures += failed
            finally:
                stop(servers.deputy)
                stop(servers.upstream)
            print_concurrency(runs, args)
        if args.policy_counts:
            sets: dict[int, Servers] = {}
            try:
                for count in args.policy_counts:
                    (work / f"p{count}").mkdir()
                    started = time.monotonic()
                    policies = write_policy_set(work / f"policies-{count}", count)
                    sets[count] = start_servers(work / f"p{count}", None, policies)
                    console.print(f"Deputy with {count} policies answered {time.monotonic() - started:.1f} s "
                                  "after its start")
                policy_runs, failed = uvloop.run(by_policy_count(sets, args))
                failures += failed
            finally:
                for servers in sets.values():
                    stop(servers.deputy)
                    stop(servers.upstream)
            print_policy_counts(policy_runs, args)
    finally:
        if args.keep:
            console.print(f"work directory kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    if failures:
        console.print(f"[bold red]{failures} calls failed[/bold red]")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
