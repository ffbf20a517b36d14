"""Benchmark: the extra latency of a call whose upstream token must first be refreshed (issue 15).

Starts two OAuth-protected MCP upstreams with their own authorization servers (tests/support/upstream_oauth.py:
panva's ``oidc-provider`` issuing ES256 JWT access tokens, the MCP SDK's server verifying them; ``make tools``
installs the former) and a real ``python -m deputy serve`` with both as ``credentials = "oauth"`` servers, on
SQLite and on PostgreSQL when it is reachable (else skipped, the reason printed). Alice connects her account at both
through Deputy's pages, as a browser would. The two differ only in their access tokens' lifetime:

- ``fresh``: 3600 s, so her token is never due during the run: Deputy adds her cached ``Authorization`` header;
- ``due``: 30 s, inside Deputy's refresh margin (``[connections] refresh_margin``, 60 s): every call finds it due
  and first refreshes it at the AS (RFC 6749 §6, rotated refresh token sealed and stored), then goes upstream.

Then N raw JSON-RPC ``tools/call whoami`` POSTs to each, alternated (due, fresh, due, fresh...), one at a time on
one keep-alive connection, each checked to answer ``alice``; the AS's token-endpoint count checks that every
``due`` call refreshed exactly once and no ``fresh`` one did.

    .venv/bin/python bench/upstream_refresh.py [--calls 200] [--backends sqlite,postgresql]

Prints, per backend, the median and p99 latency of each kind and the difference of the medians.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.support
from tests.support.databases import database_url, postgres_available
from tests.support.deputy_process import PASSWORD, demo_upstream, running_deputy
from tests.support.oauth_flow import tokens_for_alice
from tests.support.upstream_oauth import UpstreamAuthServer, connect_account, upstream_oauth

KINDS = ("due", "fresh")
TTL = {"due": 30, "fresh": 3600}
WARM_UP = 5  # calls of each kind before the clock: discovery, connection pools, caches
PROTOCOL_VERSION = "2025-11-25"  # served on the SDK's stateless path without initialize
WHOAMI = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "whoami", "arguments": {}}}


@dataclass
class Measured:
    seconds: dict[str, list[float]]
    token_requests: dict[str, int]  # at each kind's AS during the timed calls


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98]


async def timed_calls(base: str, tokens: dict[str, str], servers: dict[str, UpstreamAuthServer],
                      calls: int) -> Measured:
    headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
               "MCP-Protocol-Version": PROTOCOL_VERSION}
    body = json.dumps(WHOAMI).encode()
    seconds: dict[str, list[float]] = {kind: [] for kind in KINDS}
    async with httpx.AsyncClient(timeout=30) as http:

        async def one(kind: str) -> float:
            started = time.perf_counter()
            answer = await http.post(f"{base}/mcp/{kind}", content=body,
                                     headers={**headers, "Authorization": f"Bearer {tokens[kind]}"})
            took = time.perf_counter() - started
            if answer.status_code != 200 or '"alice"' not in answer.text:
                raise RuntimeError(f"{kind}: HTTP {answer.status_code}: {answer.text[:300]}")
            return took

        for _ in range(WARM_UP):
            for kind in KINDS:
                await one(kind)
        before = {kind: servers[kind].token_requests() for kind in KINDS}
        for _ in range(calls):
            for kind in KINDS:
                seconds[kind].append(await one(kind))
        after = {kind: servers[kind].token_requests() for kind in KINDS}
    return Measured(seconds, {kind: after[kind] - before[kind] for kind in KINDS})


def measure(backend: str, calls: int, console: Console) -> Measured:
    with (tempfile.TemporaryDirectory(prefix="deputy-bench-refresh-") as scratch, demo_upstream() as demo,
          upstream_oauth(TTL["due"]) as (due_as, due_upstream),
          upstream_oauth(TTL["fresh"]) as (fresh_as, fresh_upstream)):
        # The SDK's server (in this process) sets the root logger to INFO with a line per request; httpx too.
        logging.getLogger().setLevel(logging.WARNING)
        directory = Path(scratch)
        extra = "".join(f'''
[servers.{kind}]
url = "{upstream.url}"
credentials = "oauth"

[servers.{kind}.oauth]
trusted_hosts = ["127.0.0.1"]
''' for kind, upstream in (("due", due_upstream), ("fresh", fresh_upstream)))
        servers = {"due": due_as, "fresh": fresh_as}
        with database_url(backend, directory) as url, running_deputy(directory, url, demo, extra) as deputy:

            async def run() -> Measured:
                tokens = {}
                for kind in KINDS:
                    tokens[kind], _ = await tokens_for_alice(deputy, deputy.resource(kind))
                    await connect_account(deputy.url, kind, servers[kind], "alice", PASSWORD)
                return await timed_calls(deputy.url, tokens, servers, calls)

            measured = asyncio.run(run())
    console.print(f"{backend}: {calls} calls of each kind, alternated; token requests during them: "
                  f"due {measured.token_requests['due']}, fresh {measured.token_requests['fresh']}")
    if measured.token_requests != {"due": calls, "fresh": 0}:
        raise RuntimeError(f"expected {calls} refreshes for 'due' and none for 'fresh': {measured.token_requests}")
    return measured


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200, help="timed calls of each kind (default 200)")
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()
    console = Console(width=150)
    table = Table(title="tools/call through Deputy to an OAuth upstream: her token due for refresh or not, ms")
    for column in ("backend", "token", "calls", "median", "p99", "extra (median)", "extra (p99)"):
        table.add_column(column, justify="left" if column in ("backend", "token") else "right")
    for backend in args.backends.split(","):
        if backend == "postgresql" and not postgres_available():
            console.print("postgresql: not reachable at 127.0.0.1:5432, skipped")
            continue
        seconds = measure(backend, args.calls, console).seconds
        medians = {kind: statistics.median(seconds[kind]) * 1000 for kind in KINDS}
        tails = {kind: p99(seconds[kind]) * 1000 for kind in KINDS}
        for kind in KINDS:
            extra = kind == "due"
            table.add_row(backend, "refreshed first" if extra else "fresh", str(len(seconds[kind])),
                          f"{medians[kind]:.1f}", f"{tails[kind]:.1f}",
                          f"{medians['due'] - medians['fresh']:.1f}" if extra else "",
                          f"{tails['due'] - tails['fresh']:.1f}" if extra else "")
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
