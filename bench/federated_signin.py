"""Benchmark: the sign-in round trip through a real OpenID Provider (issue 14).

Starts panva's ``oidc-provider`` (tests/support/oidc_op.py; ``make tools`` installs it) and a real
``python -m deputy serve`` with it as the one identity provider and no local users — on SQLite, and on
PostgreSQL when it is reachable (else skipped, the reason printed). Each run is a fresh browser (a
cookie-keeping httpx client, no OP session) doing what a person's browser does, timed per leg:

- ``start``: ``GET /authorize`` → Deputy stores the request and the pending sign-in, 303 to the OP;
- ``op``: the OP's pages: its login form fetched and submitted, until its redirect back (the OP's own cost);
- ``callback``: ``GET /login/callback/corp`` → Deputy redeems the code at the OP's token endpoint, validates
  the ID token (keys cached after the first run), upserts the user, writes ``signin.succeeded``, starts the
  session, 303 to consent;
- ``consent``: the consent page rendered for the signed-in user;
- ``total``: all four, i.e. from the MCP client's authorization request to Deputy's consent page.

    .venv/bin/python bench/federated_signin.py [--runs 9] [--backends sqlite,postgresql]

Prints the median and the slowest run of each leg. Run 1 (discovery and the JWK Set fetched) is reported apart.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

import httpx
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.support
from tests.support.databases import database_url, postgres_available
from tests.support.deputy_process import PUBLIC_CLIENT, REDIRECT_URI, demo_upstream, running_deputy
from tests.support.oidc_op import ALICE, OpClient, openid_provider, sign_in_at_op_async
from tests.support.sdk_client import free_port

LEGS = ("start", "op", "callback", "consent", "total")
CLIENT_ID = "deputy-bench"
CLIENT_SECRET = "bench-secret-0123456789abcdef"


def authorize_url(base: str) -> str:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return f"{base}/authorize?" + urlencode({
        "response_type": "code", "client_id": PUBLIC_CLIENT, "redirect_uri": REDIRECT_URI, "state": "s",
        "code_challenge": challenge, "code_challenge_method": "S256", "resource": f"{base}/mcp/demo",
        "scope": "demo:tools"})


async def one_sign_in(base: str) -> dict[str, float]:
    """One whole sign-in in a fresh browser; seconds per leg."""
    legs: dict[str, float] = {}
    async with httpx.AsyncClient(timeout=30) as browser:
        t0 = time.perf_counter()
        started = await browser.get(authorize_url(base))
        assert started.status_code == 303, started.text
        t1 = time.perf_counter()
        back = await sign_in_at_op_async(browser, started.headers["location"], ALICE.username, ALICE.password)
        t2 = time.perf_counter()
        landed = await browser.get(back.url)
        assert landed.status_code == 303, landed.text
        t3 = time.perf_counter()
        consent = await browser.get(base + landed.headers["location"])
        assert consent.status_code == 200 and "Allow access?" in consent.text, consent.text
        t4 = time.perf_counter()
    legs.update(start=t1 - t0, op=t2 - t1, callback=t3 - t2, consent=t4 - t3, total=t4 - t0)
    return legs


def measure(backend: str, runs: int, console: Console) -> tuple[dict[str, float], list[dict[str, float]]]:
    port = free_port()
    client = OpClient(CLIENT_ID, (f"http://127.0.0.1:{port}/login/callback/corp",), CLIENT_SECRET)
    with tempfile.TemporaryDirectory(prefix="deputy-bench-fed-") as scratch, demo_upstream() as upstream, \
            openid_provider([client], groups="always") as op:
        directory = Path(scratch)
        extra = (f'\n[[identity_providers]]\nname = "corp"\nissuer = "{op.issuer}"\nclient_id = "{CLIENT_ID}"\n'
                 f'client_secret = "{CLIENT_SECRET}"\n')
        with database_url(backend, directory) as url, running_deputy(directory, url, upstream, extra, port=port):
            base = f"http://127.0.0.1:{port}"
            first = asyncio.run(one_sign_in(base))
            rest = [asyncio.run(one_sign_in(base)) for _ in range(runs)]
    console.print(f"{backend}: {runs} runs after the first")
    return first, rest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()
    console = Console(width=150)
    table = Table(title="Sign-in through oidc-provider, ms (median / slowest of the runs after the first; first run)")
    table.add_column("backend")
    for leg in LEGS:
        table.add_column(leg, justify="right")
    for backend in args.backends.split(","):
        if backend == "postgresql" and not postgres_available():
            console.print("postgresql: not reachable at 127.0.0.1:5432, skipped")
            continue
        first, rest = measure(backend, args.runs, console)
        table.add_row(backend, *(f"{statistics.median(r[leg] for r in rest) * 1000:.1f} / "
                                 f"{max(r[leg] for r in rest) * 1000:.1f}" for leg in LEGS))
        table.add_row(f"{backend}, first", *(f"{first[leg] * 1000:.1f}" for leg in LEGS))
    console.print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
