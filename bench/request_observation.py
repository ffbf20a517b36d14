"""Benchmark: what observing one gateway request costs in Deputy's process (issue 13, items 1 and 3).

Runs, in this process, what :mod:`deputy.gateway.proxy` does for every ``tools/call`` besides forwarding it: an
observation begun (the client's ``traceparent`` looked for, tracing off), the message noted, four stage marks,
and :meth:`RequestObserver.finish` — the request counted and timed in the Prometheus metrics, the stage
histograms, the policy decision counted, and the ``deputy.requests`` log line. The line goes through Deputy's own
formatter and a ``StreamHandler`` to a file, as ``deputy serve`` sends it to standard error. Three modes,
interleaved, medians of the rounds:

- ``metrics``: the log line below the level (what ``log_level = "warning"`` costs);
- ``metrics + text line``, ``metrics + json line``: ``log_level = "info"`` in either format.

    .venv/bin/python bench/request_observation.py [--calls N] [--rounds R]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

from starlette.types import Message

from deputy.gateway.jsonrpc import parse_message
from deputy.gateway.observation import AUDIT, AUTHENTICATE, DECIDE, UPSTREAM, RequestObserver, RequestOutcome
from deputy.policy import Decision, Outcome
from deputy.telemetry.logs import JsonLines, TextLines
from deputy.telemetry.metrics import Metrics
from deputy.telemetry.tracing import Tracing

CALL = b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add","arguments":{"a":1,"b":2}}}'
MODES = ("metrics", "metrics + text line", "metrics + json line")


async def _send(message: Message) -> None:
    return None


def run(observer: RequestObserver, calls: int) -> float:
    """Process time per observed request, in microseconds."""
    message = parse_message(CALL)
    decided = Decision("d", Outcome.ALLOW, "add", "demo", ("p",), (), "v", "s")
    scope: dict[str, object] = {}
    started = time.process_time()
    for _ in range(calls):
        seen = observer.begin(_send, None, None)
        seen.server = "demo"
        seen.asked(message)
        for stage in (AUTHENTICATE, DECIDE, AUDIT, UPSTREAM):
            seen.stage(stage, seen.started)
        seen.decided(decided)
        seen.status, seen.outcome = 200, RequestOutcome.FORWARDED
        observer.finish(seen, scope)
    return (time.process_time() - started) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50_000, help="requests per run (default 50000)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    args = parser.parse_args()
    logger = logging.getLogger("deputy.requests")
    logger.propagate = False
    with tempfile.TemporaryDirectory() as directory, (Path(directory) / "deputy.log").open("w") as stream:
        handler = logging.StreamHandler(stream)
        logger.addHandler(handler)
        observer = RequestObserver(Metrics(), Tracing(), ["demo"])
        results: dict[str, list[float]] = {mode: [] for mode in MODES}
        for _ in range(args.rounds):
            for mode in MODES:
                logger.setLevel(logging.WARNING if mode == "metrics" else logging.INFO)
                handler.setFormatter(JsonLines() if "json" in mode else TextLines())
                results[mode].append(run(observer, args.calls))
    for mode in MODES:
        runs = ", ".join(f"{value:.1f}" for value in results[mode])
        print(f"{mode:22} {statistics.median(results[mode]):6.1f} µs/request (median; runs {runs})")


if __name__ == "__main__":
    main()
