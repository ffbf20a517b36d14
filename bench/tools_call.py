"""Benchmark: what Deputy adds to an MCP ``tools/call``.

Starts the demo upstream (the SDK's MCPServer, stateless JSON mode, one uvicorn
worker) and ``python -m deputy serve`` in front of it as real processes on
127.0.0.1, mints an access token with Deputy's own signing key, then drives
raw JSON-RPC ``tools/call add {a: 1, b: 2}`` POSTs at both, interleaved, and
prints calls/s, latency, CPU per call of each server process and Deputy's RSS.

    .venv/bin/python bench/tools_call.py [--calls N | --seconds S] [--concurrency 8,32] [--rounds 3] [--quick]

See bench/README.md for what the figures mean. Exits 1 if any call failed.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import uvloop
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _load import build_post, one_call, run_load
from _tools_call_report import BARE, Measured, print_memory, print_runs, print_summary

from deputy.keys import KeyRing
from deputy.oauth.access_tokens import mint_access_token

HOST = "127.0.0.1"
BENCH_DIR = Path(__file__).resolve().parent
PROTOCOL_VERSION = "2025-11-25"  # a handshake-era version: the SDK serves it on its stateless path
TOOL_CALL = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                        "params": {"name": "add", "arguments": {"a": 1, "b": 2}}},
                       separators=(",", ":")).encode()
OK_MARKER = b'"structuredContent":{"result":3}'
CLK_TCK = os.sysconf("SC_CLK_TCK")
console = Console(width=None if sys.stdout.isatty() else 150)


# --- processes ------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """utime + stime (all threads) + cutime + cstime (waited-for children) of a process."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return sum(int(v) for v in fields[11:15]) / CLK_TCK


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def wait_http(url: str, process: subprocess.Popen[bytes], what: str, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(url, timeout=1).close()
            return
        except urllib.error.HTTPError:
            return  # it answered
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not answer at {url} within {timeout}s")


@dataclass
class Servers:
    upstream: subprocess.Popen[bytes]
    upstream_port: int
    deputy: subprocess.Popen[bytes]
    deputy_port: int
    token: str
    bare: subprocess.Popen[bytes] | None = None  # bench/_bare_proxy.py, the same-run floor (tools_call.py only)
    bare_port: int = 0


def write_config(path: Path, public_url: str, port: int, upstream_port: int, policies: Path | None = None,
                 limits: str = "") -> None:
    """The configuration of a Deputy on ``port`` in front of the demo upstream (also used by audit_path.py);
    ``limits``: more lines of its ``[limits]`` table. Every call comes from one user (the bench's token), at up to
    512 at once (bench/scaling.py), so her cap on calls in flight is lifted."""
    path.write_text(f'''
public_url = "{public_url}"
port = {port}

[tokens]
access_token_ttl = 3600

[registration]
mode = "off"

[servers.demo]
title = "Demo"
url = "http://{HOST}:{upstream_port}/mcp"
scopes = ["demo:tools"]
{f'policies = "{policies}"' if policies is not None else ""}

[limits]
calls_per_user = 100000
{limits}
''')


def bench_token(data_dir: Path, public_url: str) -> str:
    """An access token for /mcp/demo minted with the Deputy's own signing key (created at its start): the bench
    measures the call path, not the OAuth flow. A grant id (sid) makes every call run the revocation check, as
    real tokens do. Valid for a day: a soak on a busy machine can run past an hour (bench/soak.py)."""
    ring = KeyRing.open(data_dir / "keys", 3600)
    token, _ = mint_access_token(ring, issuer=public_url, subject="bench-user", client_id="bench-client",
                                 audience=f"{public_url}/mcp/demo", scope="demo:tools", ttl=86_400,
                                 grant_id="bench-grant", auth_time=None)
    return token


def start_servers(work: Path, profile: Path | None, policies: Path | None = None, *,
                  bare_proxy: bool = False) -> Servers:
    upstream_port, deputy_port = free_port(), free_port()
    up_log = work / "upstream.log"
    # The upstream is the fixed reference: it does not inherit PYTHONPATH (which may hold a Deputy experiment).
    up_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    upstream = subprocess.Popen([sys.executable, str(BENCH_DIR / "_upstream.py"), str(upstream_port)],
                                env=up_env, stdout=up_log.open("wb"), stderr=subprocess.STDOUT)
    try:
        wait_http(f"http://{HOST}:{upstream_port}/mcp", upstream, "demo upstream", up_log)
    except BaseException:
        upstream.kill()
        raise
    public_url = f"http://{HOST}:{deputy_port}"
    config = work / "deputy.toml"
    write_config(config, public_url, deputy_port, upstream_port, policies)
    data_dir = work / "data"
    env = {**os.environ, "DEPUTY_CONFIG": str(config), "DEPUTY_DATA_DIR": str(data_dir)}
    env.pop("DEPUTY_DATABASE_URL", None)  # default: SQLite in the data dir
    command = [sys.executable, "-m", "deputy", "serve"]
    if profile is not None:
        command = [sys.executable, str(BENCH_DIR / "_cprofile_deputy.py"), str(profile), "serve"]
    dep_log = work / "deputy.log"
    deputy = subprocess.Popen(command, env=env, cwd=work, stdout=dep_log.open("wb"), stderr=subprocess.STDOUT)
    try:
        wait_http(f"{public_url}/healthz", deputy, "deputy serve", dep_log)
        token = bench_token(data_dir, public_url)
    except BaseException:
        stop(deputy)
        stop(upstream)
        raise
    servers = Servers(upstream, upstream_port, deputy, deputy_port, token)
    if bare_proxy:
        servers.bare_port = free_port()
        bare_log = work / "bare-proxy.log"
        servers.bare = subprocess.Popen([sys.executable, str(BENCH_DIR / "_bare_proxy.py"), str(servers.bare_port),
                                         f"http://{HOST}:{upstream_port}/mcp"],
                                        env=up_env, stdout=bare_log.open("wb"), stderr=subprocess.STDOUT)
        try:
            wait_http(f"http://{HOST}:{servers.bare_port}/mcp", servers.bare, "bare proxy", bare_log)
        except BaseException:
            stop_servers(servers)
            raise
    return servers


def stop_servers(servers: Servers) -> None:
    for process in (servers.bare, servers.deputy, servers.upstream):
        if process is not None:
            stop(process)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


# --- measuring ------------------------------------------------------------------------------------

class Bench:
    def __init__(self, servers: Servers) -> None:
        self.s = servers
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
                   "MCP-Protocol-Version": PROTOCOL_VERSION}
        self.direct = build_post(HOST, servers.upstream_port, "/mcp", TOOL_CALL, headers)
        self.via_deputy = build_post(HOST, servers.deputy_port, "/mcp/demo", TOOL_CALL,
                                     {**headers, "Authorization": f"Bearer {servers.token}"})
        self.no_token = build_post(HOST, servers.deputy_port, "/mcp/demo", TOOL_CALL, headers)
        self.via_bare = build_post(HOST, servers.bare_port, "/mcp", TOOL_CALL, headers)
        self.failures = 0
        self.deputy_calls = 0

    @property
    def targets(self) -> tuple[str, ...]:
        return ("direct", BARE, "deputy") if self.s.bare is not None else ("direct", "deputy")

    def target(self, name: str) -> tuple[int, bytes]:
        if name == "direct":
            return self.s.upstream_port, self.direct
        return (self.s.bare_port, self.via_bare) if name == BARE else (self.s.deputy_port, self.via_deputy)

    def front_pid(self, name: str) -> int:
        """The process whose CPU a run of ``name`` charges per call: Deputy, the bare proxy, or (direct) Deputy
        idling, which the reports do not show."""
        return self.s.bare.pid if name == BARE and self.s.bare is not None else self.s.deputy.pid

    async def check_first_calls(self) -> None:
        for name in self.targets:
            port, raw = self.target(name)
            status, body = await one_call(HOST, port, raw)
            result = json.loads(body).get("result", {}) if status == 200 else {}
            if status != 200 or result.get("structuredContent") != {"result": 3} \
                    or result.get("content", [{}])[0].get("text") != "3":
                raise SystemExit(f"{name}: unexpected first response: HTTP {status} {body[:300]!r}")
            console.print(f"[green]ok[/green] {name}: tools/call add(1, 2) -> 3")
        self.deputy_calls += 1
        status, _ = await one_call(HOST, self.s.deputy_port, self.no_token)
        if status != 401:
            raise SystemExit(f"deputy accepted a call without a token (HTTP {status})")
        console.print("[green]ok[/green] deputy refuses a call without a token (401)")

    async def run(self, name: str, concurrency: int, round_: int = 0, *, calls: int | None = None,
                  seconds: float | None = None) -> Measured:
        port, raw = self.target(name)
        front = self.front_pid(name)
        d0, u0, c0 = cpu_seconds(front), cpu_seconds(self.s.upstream.pid), time.process_time()
        result = await run_load(HOST, port, raw, concurrency, OK_MARKER, calls=calls, seconds=seconds)
        d1, u1, c1 = cpu_seconds(front), cpu_seconds(self.s.upstream.pid), time.process_time()
        if result.errors:
            self.failures += result.errors
            console.print(f"[red]{name} c={concurrency}: {result.errors} failed calls; first: "
                          f"{result.first_error}[/red]")
        if name == "deputy":
            self.deputy_calls += result.calls
        return Measured(name, concurrency, round_, result, d1 - d0, u1 - u0, c1 - c0)


async def bench(servers: Servers, args: argparse.Namespace) -> int:
    b = Bench(servers)
    pid = servers.deputy.pid
    memory: list[tuple[str, int, float]] = [("idle after start", 0, rss_mb(pid))]

    await b.check_first_calls()
    for name in b.targets:
        await b.run(name, 8, seconds=args.warmup)
    memory.append(("after warm-up", b.deputy_calls, rss_mb(pid)))

    # Memory: blocks of N calls through Deputy, RSS after each; the phase stops at --mem-seconds.
    top = max(args.concurrency)
    phase_end = time.monotonic() + args.mem_seconds
    for block in range(1, args.mem_blocks + 1):
        left = phase_end - time.monotonic()
        if left <= 0:
            break
        m = await b.run("deputy", top, calls=args.mem_block_calls, seconds=left)
        memory.append((f"after block {block} ({m.result.calls:,} calls, c={top}, {m.result.rate:.0f}/s)",
                       b.deputy_calls, rss_mb(pid)))

    runs: list[Measured] = []
    for c in args.concurrency:
        for r in range(1, args.rounds + 1):
            order = b.targets if r % 2 else b.targets[::-1]  # alternate who goes first
            for name in order:
                runs.append(await b.run(name, c, r, calls=args.calls,
                                        seconds=None if args.calls else args.seconds))
    memory.append(("after the throughput rounds", b.deputy_calls, rss_mb(pid)))

    print_runs(console, runs)
    print_summary(console, runs, args, b.targets)
    print_memory(console, memory)
    if b.failures:
        console.print(f"[bold red]{b.failures} calls failed[/bold red]")
        return 1
    console.print("[green]all calls succeeded[/green]")
    return 0


# --- main -----------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--calls", type=int, default=None, help="calls per run (default: time-bound runs, --seconds)")
    p.add_argument("--seconds", type=float, default=None, help="length of a run when --calls is not given "
                   "(default 8; 2 with --quick)")
    p.add_argument("--concurrency", default=None, help="comma-separated connection counts (default 8,32)")
    p.add_argument("--rounds", type=int, default=None, help="interleaved rounds per concurrency (default 3)")
    p.add_argument("--warmup", type=float, default=None, help="warm-up seconds per target (default 5)")
    p.add_argument("--mem-blocks", type=int, default=None, help="memory blocks through Deputy (default 3)")
    p.add_argument("--mem-block-calls", type=int, default=None, help="calls per memory block (default 10000)")
    p.add_argument("--mem-seconds", type=float, default=None,
                   help="time cap of the memory phase; a block cut short says so (default 90)")
    p.add_argument("--quick", action="store_true", help="~30 s smoke run: fewer, smaller runs")
    p.add_argument("--policies", type=Path, default=None,
                   help="decide every call with the Cedar policies in this directory (e.g. deputy/demo/policies)")
    p.add_argument("--profile", type=Path, default=None,
                   help="run Deputy under cProfile and write pstats here (figures are then slower)")
    p.add_argument("--no-bare-proxy", action="store_true",
                   help="leave out the bare pass-through proxy (bench/_bare_proxy.py) measured beside Deputy")
    args = p.parse_args(argv)
    quick = args.quick
    args.seconds = args.seconds or (2.0 if quick else 8.0)
    args.concurrency = [int(c) for c in (args.concurrency or "8,32").split(",")]
    args.rounds = args.rounds or (1 if quick else 3)
    args.warmup = args.warmup if args.warmup is not None else (1.0 if quick else 5.0)
    args.mem_blocks = args.mem_blocks if args.mem_blocks is not None else (2 if quick else 3)
    args.mem_block_calls = args.mem_block_calls or (1000 if quick else 10_000)
    args.mem_seconds = args.mem_seconds if args.mem_seconds is not None else (8.0 if quick else 90.0)
    return args


def main() -> int:
    args = parse_args()
    work = Path(tempfile.mkdtemp(prefix="deputy-bench-"))
    started = time.monotonic()
    try:
        servers = start_servers(work, args.profile.resolve() if args.profile else None,
                                args.policies.resolve() if args.policies else None, bare_proxy=not args.no_bare_proxy)
        try:
            console.print(f"upstream pid {servers.upstream.pid} on :{servers.upstream_port}, "
                          f"Deputy pid {servers.deputy.pid} on :{servers.deputy_port}; "
                          f"{os.cpu_count()} CPUs; {time.strftime('%Y-%m-%d %H:%M')}")
            code = uvloop.run(bench(servers, args))
        finally:
            stop_servers(servers)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    console.print(f"took {time.monotonic() - started:.0f} s")
    return code


if __name__ == "__main__":
    raise SystemExit(main())
