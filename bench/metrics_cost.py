"""Benchmark: what the Prometheus metrics cost per call, and what a scrape costs the event loop.

Three parts, in one process, no Deputy started:

1. **per operation** — each instrument update the served paths make, timed with ``timeit`` (best of
   ``--rounds`` rounds of ``--number`` operations): the token endpoint's count of an issue or a refusal, the
   audit writer's per-batch timing and two observations, and, for comparison, the gateway's per-call
   updates (a request count, a request duration, four stage durations, a decision count);
2. **per call** — the sums of part 1 for one token request, one audit batch and one gateway call;
3. **per scrape** — a registry with every series Deputy can have (every grant type x every OAuth error
   code, three servers x every MCP method x every outcome, every stage: the worst case, since every label is a
   closed set) and one as a small deployment's (one server, the methods and outcomes of ordinary use),
   rendered in the text format, in OpenMetrics and gzipped; then ``--scrapes`` GETs of the full one through
   the real listener (:mod:`deputy.telemetry.metrics_listener`) on loopback, while a ticker on the event loop
   measures how late it runs: the listener renders in a worker thread, so the loop is held for much less than
   a rendering takes.

    .venv/bin/python bench/metrics_cost.py [--number 200000] [--rounds 5] [--scrapes 200]

The whole-call effect on the token endpoint is measured with ``bench/token_exchange.py`` on the commit before
the metrics and on the one that adds them (bench/README.md has the commands).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import statistics
import sys
import time
import timeit
from pathlib import Path

import httpx
from prometheus_client import make_asgi_app
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deputy.gateway.observation import AUDIT, AUTHENTICATE, DECIDE, UPSTREAM, RequestOutcome
from deputy.oauth.errors import OAuthError
from deputy.oauth.token import GRANT_LABELS, OTHER_GRANT
from deputy.telemetry.metrics import MCP_METHODS, Metrics
from deputy.telemetry.metrics_listener import MetricsListener

SERVERS = ("demo", "other", "local")
OUTCOMES = tuple(RequestOutcome)
STAGES = (AUTHENTICATE, DECIDE, AUDIT, UPSTREAM)
GRANTS = (*GRANT_LABELS.values(), OTHER_GRANT)
DECISIONS = ("allow", "deny", "held")


def _codes() -> list[str]:
    found: set[str] = set()
    pending: list[type[OAuthError]] = [OAuthError]
    while pending:
        cls = pending.pop()
        found.add(cls.code)
        pending.extend(cls.__subclasses__())
    return sorted(found)


def per_operation(metrics: Metrics, number: int, rounds: int) -> dict[str, float]:
    """Nanoseconds per operation, best of ``rounds``."""
    issued, refused = metrics.tokens_issued, metrics.token_refusals
    batch, commit = metrics.audit_batch_records, metrics.audit_commit_seconds
    requests, request_seconds = metrics.requests, metrics.request_seconds
    stages, decisions = metrics.stage_seconds, metrics.decisions
    bound = issued.labels("client_credentials")
    clock = time.monotonic
    operations = {
        "token issued: a child bound at start, .inc()": bound.inc,
        "token refused: refusals.labels(grant, error).inc()": lambda: refused.labels("client_credentials",
                                                                                 "invalid_client").inc(),
        "(for comparison: issued.labels(grant).inc())": lambda: issued.labels("client_credentials").inc(),
        "audit batch: 2 x monotonic()": lambda: (clock(), clock()),
        "audit batch: commit_seconds.observe()": lambda: commit.observe(0.0012),
        "audit batch: batch_records.observe()": lambda: batch.observe(17),
        "gateway: requests.labels(s, m, o).inc()": lambda: requests.labels("demo", "tools/call", "forwarded").inc(),
        "gateway: request_seconds.labels(s, m).observe()": lambda: request_seconds.labels("demo",
                                                                                          "tools/call").observe(0.002),
        "gateway: stage_seconds.labels(st).observe()": lambda: stages.labels("decide").observe(0.0001),
        "gateway: decisions.labels(s, o).inc()": lambda: decisions.labels("demo", "allow").inc(),
    }
    results = {}
    for name, operation in operations.items():
        best = min(timeit.repeat(operation, number=number, repeat=rounds))
        results[name] = best / number * 1e9
    return results


def filled() -> Metrics:
    """A registry with every series a busy Deputy could have (labels are closed sets, so this is the most)."""
    metrics = Metrics()
    for grant in GRANTS:
        metrics.tokens_issued.labels(grant).inc()
        for code in _codes():
            metrics.token_refusals.labels(grant, code).inc()
    for server in SERVERS:
        for method in (*sorted(MCP_METHODS), "other", "none"):
            metrics.request_seconds.labels(server, method).observe(0.002)
            for outcome in OUTCOMES:
                metrics.requests.labels(server, method, outcome).inc()
        for decision in DECISIONS:
            metrics.decisions.labels(server, decision).inc()
        for kind in ("unreachable", "timeout", "status", "process"):
            metrics.upstream_errors.labels(server, kind).inc()
    for stage in STAGES:
        metrics.stage_seconds.labels(stage).observe(0.0003)
    metrics.audit_batch_records.observe(3)
    metrics.audit_commit_seconds.observe(0.001)
    return metrics


def small() -> Metrics:
    """One server, the methods and outcomes of ordinary use, two grant types, a few refusals."""
    metrics = Metrics()
    for grant in ("authorization_code", "refresh_token"):
        metrics.tokens_issued.labels(grant).inc()
    for error in ("invalid_grant", "invalid_client"):
        metrics.token_refusals.labels("refresh_token", error).inc()
    for method in ("initialize", "notifications/initialized", "tools/list", "tools/call"):
        metrics.request_seconds.labels("demo", method).observe(0.002)
        for outcome in ("forwarded", "unauthorized"):
            metrics.requests.labels("demo", method, outcome).inc()
    metrics.decisions.labels("demo", "allow").inc()
    for stage in STAGES:
        metrics.stage_seconds.labels(stage).observe(0.0003)
    metrics.audit_batch_records.observe(3)
    metrics.audit_commit_seconds.observe(0.001)
    return metrics


def per_render(metrics: Metrics, rounds: int) -> dict[str, float]:
    """Milliseconds per rendering of the whole registry, median of ``rounds x 20``."""
    text = generate_latest(metrics.registry)
    renders = {
        "text format 0.0.4": lambda: generate_latest(metrics.registry),
        "OpenMetrics 1.0": lambda: generate_openmetrics(metrics.registry),
        "text + gzip": lambda: gzip.compress(generate_latest(metrics.registry)),
    }
    results = {name: statistics.median(timeit.repeat(render, number=1, repeat=rounds * 20)) * 1e3
               for name, render in renders.items()}
    print(f"  exposition: {len(text):,} bytes, {len(gzip.compress(text)):,} gzipped, "
          f"{sum(1 for line in text.splitlines() if line and not line.startswith(b'#')):,} series")
    return results


async def per_scrape(metrics: Metrics, scrapes: int, on_loop: bool) -> tuple[list[float], list[float]]:
    """Milliseconds per GET /metrics through the listener on loopback, one at a time, and how late a 1 ms
    ticker on the same event loop ran meanwhile (the loop's stalls). ``on_loop``: render on the event loop
    instead, as prometheus-client's own ASGI app does, for comparison."""
    listener = MetricsListener(metrics, "127.0.0.1", 0)
    if on_loop:
        listener.endpoint = make_asgi_app(metrics.registry)  # type: ignore[assignment]
    await listener.start()
    assert listener.address is not None
    url = f"http://127.0.0.1:{listener.address[1]}/metrics"
    times: list[float] = []
    lags: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            due = time.perf_counter() + 0.001
            await asyncio.sleep(0.001)
            lags.append(max(0.0, time.perf_counter() - due) * 1e3)

    ticking = asyncio.create_task(ticker())
    try:
        async with httpx.AsyncClient() as http:
            await http.get(url)
            for _ in range(scrapes):
                began = time.perf_counter()
                answer = await http.get(url, headers={"Accept-Encoding": "gzip"})
                times.append((time.perf_counter() - began) * 1e3)
                assert answer.status_code == 200
    finally:
        done.set()
        await ticking
        await listener.stop()
    return times, lags


def _p(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--number", type=int, default=200_000, help="operations per timing round (default 200000)")
    p.add_argument("--rounds", type=int, default=5, help="timing rounds; the best is kept (default 5)")
    p.add_argument("--scrapes", type=int, default=200, help="GET /metrics through the listener (default 200)")
    args = p.parse_args()

    print(f"Python {sys.version.split()[0]}, prometheus-client "
          f"{__import__('importlib.metadata').metadata.version('prometheus-client')}")
    print("\n1. per operation (ns, best of rounds)")
    ops = per_operation(Metrics(), args.number, args.rounds)
    for name, ns in ops.items():
        print(f"  {name:<50} {ns:8.0f}")
    token_issued = ops["token issued: a child bound at start, .inc()"]
    token_refused = ops["token refused: refusals.labels(grant, error).inc()"]
    batch = sum(v for k, v in ops.items() if k.startswith("audit batch"))
    gateway = (ops["gateway: requests.labels(s, m, o).inc()"] + ops["gateway: request_seconds.labels(s, m).observe()"]
               + 4 * ops["gateway: stage_seconds.labels(st).observe()"] + ops["gateway: decisions.labels(s, o).inc()"])
    print("\n2. per call (µs)")
    print(f"  {'one token issued':<50} {token_issued / 1000:8.2f}")
    print(f"  {'one token request refused':<50} {token_refused / 1000:8.2f}")
    print(f"  {'one audit batch (any number of records)':<50} {batch / 1000:8.2f}")
    print(f"  {'one gateway call, every child looked up (an upper bound)':<50} {gateway / 1000:8.2f}")
    for title, metrics in (("every series Deputy can have", filled()), ("a small deployment's", small())):
        print(f"\n3. per rendering, {title} (ms, median)")
        for name, ms in per_render(metrics, args.rounds).items():
            print(f"  {name:<50} {ms:8.2f}")
    print(f"\n4. GET /metrics of every series through the listener, gzip, {args.scrapes} scrapes (ms)")
    for where, on_loop in (("rendered in a thread (Deputy)", False), ("rendered on the loop (for comparison)", True)):
        times, lags = asyncio.run(per_scrape(filled(), args.scrapes, on_loop))
        print(f"  {where}")
        print(f"    {'scrape: p50 / p99':<48} {statistics.median(times):8.2f} / {_p(times, 0.99):.2f}")
        print(f"    {'event loop late (1 ms ticker): p50 / p99 / max':<48} {statistics.median(lags):8.2f} / "
              f"{_p(lags, 0.99):.2f} / {max(lags):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
