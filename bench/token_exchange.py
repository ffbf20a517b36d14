"""Benchmark: RFC 8693 token exchanges per second through Deputy's real ``/token`` endpoint.

Starts ``python -m deputy serve`` as a real process on 127.0.0.1 — once on SQLite,
once on PostgreSQL (skipped, with the reason printed, when it is not reachable) —
with two agents: ``agent-a``, whose client credentials tokens are the subject tokens,
and ``agent-b``, which ``[[delegation.may_act]]`` lets act for them. Each exchange is
a fresh POST /token from agent-b with client authentication, a subject token (one of
a pool, round robin) and agent-b's own token as actor token; the issued token's
chain is ``agent-b acting for agent-a``. The baseline in the same run is the client
credentials grant of the same client with the same authentication, interleaved.

Client authentication is measured both ways: ``client_secret_basic`` (argon2id hash,
verified once then remembered by Deputy) and ``private_key_jwt`` (a fresh ES256
assertion signed by the bench for every request, its ``jti`` recorded by Deputy).

    .venv/bin/python bench/token_exchange.py [--seconds S] [--concurrency 8,32] [--rounds 3]
        [--backends sqlite,postgresql] [--auth basic,jwt] [--quick] [--profile OUT] [--uncached-secrets]
        [--count N]   # instead of load: the database work of one request, counted over N sequential ones
        [--workers N] # deputy serve --workers N; Deputy CPU is then the sum over its processes

See bench/README.md for what the figures mean. Exits 1 if any request failed.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import uvloop
from joserfc import jwt

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.support
from _load import RunResult
from _statement_counts import per_request, print_counts
from _token_deputy import (
    ACCESS_TOKEN_TYPE,
    ACTOR_KEY,
    ACTORS,
    ASSERTION_TYPE,
    AUTH_NAMES,
    GRANTS,
    SECRETS,
    SUBJECT,
    TOKEN_EXCHANGE,
    Deputy,
    database,
    running_deputy,
)
from _token_report import Measured, argon2_cost, console, machine_line, print_runs, print_summary
from tools_call import cpu_seconds

from tests.support.databases import postgres_available

# --- requests ---------------------------------------------------------------------------------------

def basic_header(client_id: str) -> dict[str, str]:
    raw = f"{client_id}:{SECRETS[client_id]}".encode()
    return {"Authorization": "Basic " + base64.b64encode(raw).decode()}


def assertion(deputy_url: str, client_id: str) -> str:
    """A fresh client assertion (RFC 7523 §2.2): new jti, so Deputy accepts each exactly once."""
    t = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": deputy_url, "iat": t, "exp": t + 120,
              "jti": uuid.uuid4().hex}
    return jwt.encode({"alg": "ES256", "typ": "JWT", "kid": ACTOR_KEY.kid}, claims, ACTOR_KEY, algorithms=["ES256"])


@dataclass
class Tokens:
    subjects: list[str]  # agent-a's client credentials tokens
    actor: dict[str, str]  # auth method -> the exchanging client's own token


Request = Callable[[int], tuple[bytes, dict[str, str]]]  # call number -> (body, headers)
FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def request_maker(deputy: Deputy, tokens: Tokens, grant: str, auth: str) -> Request:
    client = ACTORS[auth]
    resource = f"{deputy.url}/mcp/demo"

    def make(i: int) -> tuple[bytes, dict[str, str]]:
        if grant == "exchange":
            fields = [("grant_type", TOKEN_EXCHANGE),
                      ("subject_token", tokens.subjects[i % len(tokens.subjects)]),
                      ("subject_token_type", ACCESS_TOKEN_TYPE),
                      ("actor_token", tokens.actor[auth]), ("actor_token_type", ACCESS_TOKEN_TYPE)]
        else:
            fields = [("grant_type", "client_credentials"), ("resource", resource)]
        if auth == "jwt":
            fields += [("client_assertion_type", ASSERTION_TYPE), ("client_assertion", assertion(deputy.url, client))]
            return urlencode(fields).encode(), FORM
        return urlencode(fields).encode(), {**FORM, **basic_header(client)}

    return make


async def post(session: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    async with session.post(url, data=body, headers=headers) as response:
        return response.status, await response.read()


async def access_token(session: aiohttp.ClientSession, deputy: Deputy, body: bytes, headers: dict[str, str]) -> str:
    status, raw = await post(session, f"{deputy.url}/token", body, headers)
    if status != 200:
        raise SystemExit(f"setup request failed: HTTP {status} {raw[:300]!r}")
    token: str = json.loads(raw)["access_token"]
    return token


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return decoded


async def setup(deputy: Deputy, pool: int, auths: list[str]) -> Tokens:
    """Subject tokens, the actors' own tokens, and one checked exchange per authentication method."""
    async with aiohttp.ClientSession() as session:
        cc = urlencode([("grant_type", "client_credentials"), ("resource", f"{deputy.url}/mcp/demo")]).encode()
        subjects = [await access_token(session, deputy, cc, {**FORM, **basic_header(SUBJECT)}) for _ in range(pool)]
        may_act = claims_of(subjects[0]).get("may_act")
        actor: dict[str, str] = {}
        empty = Tokens(subjects, {})
        for auth in auths:
            body, headers = request_maker(deputy, empty, "client_credentials", auth)(0)
            actor[auth] = await access_token(session, deputy, body, headers)
        tokens = Tokens(subjects, actor)
        for auth in auths:
            body, headers = request_maker(deputy, tokens, "exchange", auth)(0)
            issued = claims_of(await access_token(session, deputy, body, headers))
            expected = {"sub": ACTORS[auth], "client_id": ACTORS[auth], "iss": deputy.url}
            if issued.get("sub") != SUBJECT or issued.get("act") != expected:
                raise SystemExit(f"unexpected exchanged token ({auth}): {issued}")
    console.print(f"[green]ok[/green] {pool} subject tokens of {SUBJECT} (may_act {json.dumps(may_act)}); "
                  f"exchange checked for {', '.join(AUTH_NAMES[a] for a in auths)}: "
                  f"sub {SUBJECT}, act {{sub: agent-b…, iss: {deputy.url}}}")
    return tokens


# --- measuring --------------------------------------------------------------------------------------

async def run_load(url: str, make: Request, concurrency: int, seconds: float, marker: bytes,
                   pid: int) -> tuple[RunResult, float, float]:
    """As many requests as fit in ``seconds`` over ``concurrency`` pooled keep-alive connections.

    Returns the result and the CPU seconds of process ``pid`` (Deputy) and of this one while it ran.
    """
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60)) as session:

        async def healthz() -> None:
            async with session.get(url.replace("/token", "/healthz")) as response:
                await response.read()

        await asyncio.gather(*(healthz() for _ in range(concurrency)))  # open the connections first
        latencies: list[int] = []
        errors = 0
        sent = 0
        first_error: str | None = None
        clock = time.perf_counter_ns
        deadline = clock() + int(seconds * 1e9)

        async def worker() -> None:
            nonlocal errors, sent, first_error
            while True:
                t0 = clock()
                if t0 >= deadline:
                    return
                body, headers = make(sent)
                sent += 1
                try:
                    status, raw = await post(session, url, body, headers)
                except (aiohttp.ClientError, TimeoutError) as exc:
                    errors += 1
                    first_error = first_error or f"{type(exc).__name__}: {exc}"
                    continue
                if status == 200 and marker in raw:
                    latencies.append(clock() - t0)
                else:
                    errors += 1
                    first_error = first_error or f"HTTP {status}: {raw[:200]!r}"

        d0, c0 = tree_cpu_seconds(pid), time.process_time()
        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
        d1, c1 = tree_cpu_seconds(pid), time.process_time()
    result = RunResult(calls=sent, ok=len(latencies), errors=errors, wall=wall, latencies_ns=latencies,
                       first_error=first_error)
    return result, d1 - d0, c1 - c0


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds of ``pid`` and every process below it (``serve --workers N``: the workers are its children)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(stat.parent.name))
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        try:
            total += cpu_seconds(current)
        except OSError:
            continue
        todo.extend(children.get(current, []))
    return total


MARKERS = {"exchange": b'"issued_token_type"', "client_credentials": b'"access_token"'}


async def measure(deputy: Deputy, tokens: Tokens, backend: str, auth: str, grant: str, concurrency: int,
                  round_: int, seconds: float) -> Measured:
    result, deputy_cpu, client_cpu = await run_load(f"{deputy.url}/token", request_maker(deputy, tokens, grant, auth),
                                                    concurrency, seconds, MARKERS[grant], deputy.process.pid)
    if result.errors:
        console.print(f"[red]{backend} {AUTH_NAMES[auth]} {grant} c={concurrency}: {result.errors} failed; "
                      f"first: {result.first_error}[/red]")
    return Measured(backend, auth, concurrency, round_, grant, result, deputy_cpu, client_cpu)


async def bench_backend(deputy: Deputy, backend: str, args: argparse.Namespace) -> list[Measured]:
    tokens = await setup(deputy, args.subject_tokens, args.auth)
    if args.count:
        counted = [(backend, AUTH_NAMES[auth], grant,
                    await per_request(f"{deputy.url}/token", request_maker(deputy, tokens, grant, auth), args.count,
                                      deputy.log.with_name("counts.json"), MARKERS[grant],
                                      lambda: cpu_seconds(deputy.process.pid)))
                   for auth in args.auth for grant in args.grants]
        print_counts(console, counted)
        return []
    for auth in args.auth:  # warm-up: caches, connection pools, the secret remembered
        for grant in args.grants:
            await measure(deputy, tokens, backend, auth, grant, min(args.concurrency), 0, args.warmup)
    runs: list[Measured] = []
    for auth in args.auth:
        for c in args.concurrency:
            for r in range(1, args.rounds + 1):
                order = args.grants if r % 2 else args.grants[::-1]  # alternate who goes first
                for grant in order:
                    runs.append(await measure(deputy, tokens, backend, auth, grant, c, r, args.seconds))
    return runs


# --- main -------------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--seconds", type=float, default=None, help="length of a run (default 5; 2 with --quick)")
    p.add_argument("--concurrency", default=None, help="comma-separated concurrent clients (default 8,32)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds per setting (default 3; 1 --quick)")
    p.add_argument("--warmup", type=float, default=None, help="warm-up seconds per grant and auth (default 2)")
    p.add_argument("--backends", default="sqlite,postgresql", help="sqlite, postgresql or both (default both)")
    p.add_argument("--auth", default="basic,jwt", help="basic (client_secret_basic), jwt (private_key_jwt) or both")
    p.add_argument("--grants", default=",".join(GRANTS),
                   help="exchange, client_credentials or both (default both; one alone, e.g. to profile)")
    p.add_argument("--subject-tokens", type=int, default=64, help="pool of distinct subject tokens (default 64)")
    p.add_argument("--quick", action="store_true", help="smoke run: one short round")
    p.add_argument("--profile", type=Path, default=None,
                   help="run Deputy under cProfile, pstats to OUT.BACKEND (figures are then slower)")
    p.add_argument("--count", type=int, default=0, metavar="N",
                   help="no load: count the database work of N sequential requests of each kind, per request")
    p.add_argument("--workers", type=int, default=1, help="deputy serve --workers N (default 1)")
    p.add_argument("--uncached-secrets", action="store_true",
                   help="turn Deputy's remembered-secret cache off: every client_secret_basic request runs argon2")
    args = p.parse_args(argv)
    args.seconds = args.seconds or (2.0 if args.quick else 5.0)
    args.concurrency = [int(c) for c in (args.concurrency or "8,32").split(",")]
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.warmup = args.warmup if args.warmup is not None else (0.5 if args.quick else 2.0)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    args.auth = [a.strip() for a in args.auth.split(",") if a.strip()]
    args.grants = [g.strip() for g in args.grants.split(",") if g.strip()]
    if set(args.backends) - {"sqlite", "postgresql"} or set(args.auth) - set(AUTH_NAMES) \
            or not args.grants or set(args.grants) - set(GRANTS):
        p.error("--backends takes sqlite,postgresql; --auth basic,jwt; --grants exchange,client_credentials")
    return args


def main() -> int:
    args = parse_args()
    started = time.monotonic()
    console.print(machine_line())
    paid = ("every client_secret_basic request pays it" if args.uncached_secrets
            else "Deputy pays it once per client and secret, then remembers the secret")
    console.print(f"argon2id verification, measured here: {argon2_cost():.0f} ms ({paid})")
    runs: list[Measured] = []
    failures = 0
    for backend in args.backends:
        if backend == "postgresql" and not postgres_available():
            console.print("[yellow]postgresql skipped: nothing answers at 127.0.0.1:5432 with trust auth "
                          "(DEPUTY_TEST_PG sets another admin URL)[/yellow]")
            continue
        work = Path(tempfile.mkdtemp(prefix=f"deputy-bench-tx-{backend}-"))
        try:
            profile = args.profile.resolve().with_suffix(f".{backend}.pstats") if args.profile else None
            counts = work / "counts.json" if args.count else None
            with database(backend, work) as db_url, running_deputy(work, db_url, profile, args.uncached_secrets,
                                                                   counts, args.workers) as deputy:
                console.print(f"[bold]{backend}[/bold]: Deputy pid {deputy.process.pid} at {deputy.url}")
                measured = uvloop.run(bench_backend(deputy, backend, args))
                runs += measured
                failures += sum(m.result.errors for m in measured)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    if args.count:
        return 0
    if not runs:
        console.print("[red]nothing measured[/red]")
        return 1
    print_runs(runs)
    print_summary(runs, args)
    load = os.getloadavg()
    console.print(f"took {time.monotonic() - started:.0f} s; load average at the end {load[0]:.2f} {load[1]:.2f} "
                  f"{load[2]:.2f}")
    if failures:
        console.print(f"[bold red]{failures} requests failed[/bold red]")
        return 1
    console.print("[green]all requests succeeded[/green]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
