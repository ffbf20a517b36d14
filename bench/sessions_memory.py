"""Benchmark: Deputy's memory with 10,000 open MCP sessions, and with a GET event stream open on each.

MCP Streamable HTTP (2025-11-25, "Session Management"): a session is an id the server hands out in
``Mcp-Session-Id`` on ``initialize``; the client sends it on every later request. Deputy keeps no table of
sessions: the id it hands out is the upstream's id with an HMAC tag binding it to the principal
(``deputy/gateway/sessions.py``), so its memory should not grow with the number of sessions. A GET stream
("Listening for Messages from the Server") is different: it is a request in flight for as long as it is open, one
client connection and one upstream connection each, so its cost is per stream by nature.

1. Start the demo upstream with sessions (``bench/_upstream_sessions.py``) and ``deputy serve`` in front of it
   (``[limits] max_connections`` raised to ``--max-connections``; the descriptor limit and the listener budget are
   printed), mint a token as ``bench/tools_call.py`` does.
2. Open ``--sessions`` sessions through Deputy: ``initialize``, then ``notifications/initialized`` with the
   session id, over ``--concurrency`` keep-alive connections. Deputy's RSS before, at each tenth, after.
3. Open a GET event stream on each session (``Accept: text/event-stream``), ``--open-concurrency`` at a time; a
   stream counts as open once its 200 headers arrived within ``--stream-timeout`` seconds. While they are open, a
   ``tools/call`` on a fresh connection shows whether ordinary calls still go through. RSS and open descriptors of
   Deputy at each tenth and with all open; then every stream is closed and RSS read once more.

    .venv/bin/python bench/sessions_memory.py [--sessions 10000] [--concurrency 32] [--max-connections 15000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tools_call import HOST, PROTOCOL_VERSION, TOOL_CALL, bench_token, free_port, rss_mb, stop, wait_http, write_config

from deputy.limits import LimitSettings
from deputy.listener import listener_budget

BENCH_DIR = Path(__file__).resolve().parent
INITIALIZE = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                         "params": {"protocolVersion": PROTOCOL_VERSION, "capabilities": {},
                                    "clientInfo": {"name": "sessions-bench", "version": "1"}}}).encode()
INITIALIZED = json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}).encode()


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Client:
    """One HTTP/1.1 keep-alive connection that returns status, headers and a Content-Length body."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, port: int) -> Client:
        reader, writer = await asyncio.open_connection(HOST, port)
        return cls(reader, writer)

    async def head(self, raw: bytes) -> tuple[int, dict[str, str]]:
        self.writer.write(raw)
        head = (await self.reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:] if line)}
        return int(head[0][9:12]), headers

    async def request(self, raw: bytes) -> tuple[int, dict[str, str], bytes]:
        status, headers = await self.head(raw)
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return status, headers, body

    def close(self) -> None:
        self.writer.close()


def request(method: str, port: int, token: str, body: bytes = b"", session: str | None = None,
            accept: str = "application/json, text/event-stream") -> bytes:
    lines = [f"{method} /mcp/demo HTTP/1.1", f"Host: {HOST}:{port}", f"Authorization: Bearer {token}",
             f"Accept: {accept}", f"MCP-Protocol-Version: {PROTOCOL_VERSION}"]
    if body:
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    if session is not None:
        lines.append(f"Mcp-Session-Id: {session}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


async def open_sessions(port: int, token: str, count: int, concurrency: int, pid: int,
                        rss: list[tuple[str, float, int]]) -> list[str]:
    sessions: list[str] = []
    next_mark = count // 10
    remaining = count

    async def worker() -> None:
        nonlocal remaining, next_mark
        client = await Client.open(port)
        try:
            while remaining > 0:
                remaining -= 1
                status, headers, body = await client.request(request("POST", port, token, INITIALIZE))
                session = headers.get("mcp-session-id")
                if status != 200 or session is None or b'"protocolVersion"' not in body:
                    raise SystemExit(f"initialize: HTTP {status} {body[:200]!r}")
                status, _, body = await client.request(request("POST", port, token, INITIALIZED, session))
                if status != 202:
                    raise SystemExit(f"notifications/initialized: HTTP {status} {body[:200]!r}")
                sessions.append(session)
                if len(sessions) >= next_mark:
                    rss.append((f"{len(sessions):,} sessions initialized", rss_mb(pid), open_fds(pid)))
                    next_mark += count // 10
        finally:
            client.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return sessions


async def probe_call(port: int, token: str, session: str, wait: float) -> str:
    """A tools/call in ``session`` on a fresh connection: does an ordinary call still go through?"""
    started = time.perf_counter()
    try:
        client = await asyncio.wait_for(Client.open(port), wait)
        try:
            call = request("POST", port, token, TOOL_CALL, session)
            status, _, body = await asyncio.wait_for(client.request(call), wait)
        finally:
            client.close()
    except (TimeoutError, OSError) as exc:
        return f"no answer within {wait:g} s ({type(exc).__name__})"
    ok = status == 200 and b'"result":3' in body.replace(b" ", b"")
    said = " ok" if ok else f" {body[:160]!r}"
    return f"HTTP {status}{said} in {1000 * (time.perf_counter() - started):.0f} ms"


async def open_streams(port: int, token: str, sessions: list[str], args: argparse.Namespace, pid: int,
                       rss: list[tuple[str, float, int]]) -> tuple[list[Client], int, int, list[str]]:
    streams: list[Client] = []
    refused = timed_out = 0
    probes: list[str] = []
    statuses: dict[int, int] = {}  # of the refused ones
    semaphore = asyncio.Semaphore(args.open_concurrency)
    next_mark = len(sessions) // 10

    async def one(session: str) -> None:
        nonlocal refused, timed_out, next_mark
        async with semaphore:
            try:
                client = await Client.open(port)
            except OSError:
                refused += 1
                return
            try:
                status, _ = await asyncio.wait_for(
                    client.head(request("GET", port, token, session=session, accept="text/event-stream")),
                    args.stream_timeout)
            except (TimeoutError, asyncio.IncompleteReadError, OSError):
                timed_out += 1
                streams.append(client)  # still open: it holds what it holds on both sides
                return
            if status != 200:
                refused += 1
                statuses[status] = statuses.get(status, 0) + 1
                client.close()
                return
            streams.append(client)
            if len(streams) >= next_mark:
                rss.append((f"{len(streams):,} GET streams attempted ({timed_out:,} without headers)",
                            rss_mb(pid), open_fds(pid)))
                next_mark += len(sessions) // 10
                if len(probes) < 3:
                    probes.append(f"at {len(streams):,} streams: tools/call "
                                  f"{await probe_call(port, token, sessions[0], args.stream_timeout)}")

    await asyncio.gather(*(one(s) for s in sessions))
    if statuses:
        probes.append(f"refused streams by status: {statuses}")
    return streams, refused, timed_out, probes


def start(work: Path, max_connections: int) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes], int, str]:
    upstream_port, deputy_port = free_port(), free_port()
    up_log = work / "upstream.log"
    upstream = subprocess.Popen([sys.executable, str(BENCH_DIR / "_upstream_sessions.py"), str(upstream_port)],
                                stdout=up_log.open("wb"), stderr=subprocess.STDOUT)
    wait_http(f"http://{HOST}:{upstream_port}/mcp", upstream, "demo upstream", up_log)
    public_url = f"http://{HOST}:{deputy_port}"
    config = work / "deputy.toml"
    write_config(config, public_url, deputy_port, upstream_port,
                 limits=f"max_connections = {max_connections}\nidle_timeout = 60\n")
    env = {**os.environ, "DEPUTY_CONFIG": str(config), "DEPUTY_DATA_DIR": str(work / "data")}
    env.pop("DEPUTY_DATABASE_URL", None)
    dep_log = work / "deputy.log"
    deputy = subprocess.Popen([sys.executable, "-m", "deputy", "serve"], env=env, cwd=work,
                              stdout=dep_log.open("wb"), stderr=subprocess.STDOUT)
    try:
        wait_http(f"{public_url}/healthz", deputy, "deputy serve", dep_log)
    except BaseException:
        stop(deputy)
        stop(upstream)
        raise
    return upstream, deputy, deputy_port, bench_token(work / "data", public_url)


async def bench(args: argparse.Namespace, upstream_pid: int, pid: int, port: int, token: str) -> None:
    rss: list[tuple[str, float, int]] = [("idle after start", rss_mb(pid), open_fds(pid))]
    warm = await Client.open(port)  # one session first: imports and caches of the path are loaded once
    await warm.request(request("POST", port, token, INITIALIZE))
    warm.close()
    rss.append(("after one session", rss_mb(pid), open_fds(pid)))
    started = time.perf_counter()
    sessions = await open_sessions(port, token, args.sessions, args.concurrency, pid, rss)
    took = time.perf_counter() - started
    await asyncio.sleep(1)
    rss.append((f"{len(sessions):,} sessions, connections closed", rss_mb(pid), open_fds(pid)))
    up_sessions_mb = rss_mb(upstream_pid)
    print(f"{len(sessions):,} sessions initialized in {took:.1f} s ({len(sessions) / took:.0f}/s); "
          f"load {os.getloadavg()[0]:.2f}; upstream RSS {up_sessions_mb:.0f} MB", flush=True)
    streams: list[Client] = []
    if args.streams:
        started = time.perf_counter()
        streams, refused, timed_out, probes = await open_streams(port, token, sessions, args, pid, rss)
        rss.append((f"{len(streams) - timed_out:,} GET streams open, {timed_out:,} without headers",
                    rss_mb(pid), open_fds(pid)))
        print(f"GET streams: {len(streams) - timed_out:,} open with 200, {timed_out:,} no headers within "
              f"{args.stream_timeout:g} s, {refused:,} refused; {time.perf_counter() - started:.0f} s; "
              f"load {os.getloadavg()[0]:.2f}; upstream RSS {rss_mb(upstream_pid):.0f} MB", flush=True)
        for line in probes:
            print("  " + line)
        probe = await probe_call(port, token, sessions[0], args.stream_timeout)
        print(f"  with all open: tools/call {probe}", flush=True)
        for client in streams:
            client.close()
        await asyncio.sleep(3)
        rss.append(("every stream closed", rss_mb(pid), open_fds(pid)))
        probe = await probe_call(port, token, sessions[0], args.stream_timeout)
        print(f"  after closing them: tools/call {probe}", flush=True)
    print("\n| when | Deputy RSS MB | Deputy open fds |")
    print("|---|---|---|")
    for when, mb, fds in rss:
        print(f"| {when} | {mb:.1f} | {fds:,} |")
    by_when = {when: mb for when, mb, _ in rss}
    grown = by_when[f"{len(sessions):,} sessions, connections closed"] - by_when["after one session"]
    print(f"\nsessions: {1024 * 1024 * grown / max(1, len(sessions)):,.0f} bytes of Deputy RSS per session "
          f"({grown:+.1f} MB over {len(sessions):,})")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sessions", type=int, default=10_000)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--no-streams", dest="streams", action="store_false", help="skip the GET streams")
    p.add_argument("--open-concurrency", type=int, default=200, help="GET streams being opened at once")
    p.add_argument("--stream-timeout", type=float, default=10.0)
    p.add_argument("--max-connections", type=int, default=15_000, help="Deputy's [limits] max_connections")
    args = p.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < args.sessions + 256:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    budget = listener_budget(LimitSettings(max_connections=args.max_connections), hard)
    print(f"descriptors: soft {soft}, hard {hard}; Deputy's listener admits {budget.max_connections:,} connections "
          f"([limits] max_connections = {args.max_connections:,}), backlog {budget.backlog}; Deputy's upstream "
          f"pool: aiohttp TCPConnector(limit=256); {time.strftime('%Y-%m-%d %H:%M')} UTC; "
          f"load {os.getloadavg()[0]:.2f}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="deputy-sessions-"))
    try:
        upstream, deputy, port, token = start(work, args.max_connections)
        try:
            uvloop.run(bench(args, upstream.pid, deputy.pid, port, token))
        finally:
            stop(deputy)
            stop(upstream)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
