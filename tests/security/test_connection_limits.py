"""Idle and half-open connections cannot take Deputy down (issue 11, finding 4; "Input size and time").

The attack: open connections and send nothing, or half a request line, until the process runs out
of file descriptors. What must hold, each against a real ``deputy serve`` process and a real MCP SDK
client: a connection that does not send its request headers within ``[limits] header_timeout`` is
closed (RFC 9112 §9.5; 408 when it had begun, RFC 9110 §15.5.9); no more than ``max_connections``
stay open, the idle ones are what is dropped, and real clients keep being served; the soft
descriptor limit is raised to the hard one at start; and a process with very few descriptors
survives a flood and keeps serving.
"""

from __future__ import annotations

import resource
import select
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import httpx2
import pytest
from mcp.client import Client
from mcp.client.auth.extensions.client_credentials import ClientCredentialsOAuthProvider
from mcp.client.streamable_http import streamable_http_client

from tests.support.agents import SECRET_AGENT, SECRET_AGENT_SECRET, agents_config
from tests.support.databases import database_url
from tests.support.deputy_process import RunningDeputy, running_deputy
from tests.support.sdk_client import InMemoryTokenStorage

# Two loopback sources (all of 127.0.0.0/8 is loopback on Linux), and not 127.0.0.1: the attackers' tens
# of thousands of local ports must not collide with the ports the suite's servers pick on 127.0.0.1.
ATTACKER_SOURCES = ("127.0.0.2", "127.0.0.3")
DEADLINE = 45.0  # seconds a poll may wait for what must happen; never an asserted timing


def _limits(**values: float) -> str:
    return "\n[limits]\n" + "".join(f"{key} = {value}\n" for key, value in values.items())


@contextmanager
def _deputy(directory: Path, upstream_url: str, limits: str,
            preexec_fn: Callable[[], None] | None = None) -> Iterator[RunningDeputy]:
    # Connections are the listener's business, not storage's: one backend is enough here.
    with (database_url("sqlite", directory) as url,
          running_deputy(directory, url, upstream_url, agents_config(directory) + limits, preexec_fn) as running):
        yield running


def _address(deputy: RunningDeputy) -> tuple[str, int]:
    parts = urlsplit(deputy.url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


def _connect(deputy: RunningDeputy) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(DEADLINE)
    sock.connect(_address(deputy))
    return sock


def _open_idle(deputy: RunningDeputy, count: int, stack: ExitStack) -> list[socket.socket]:
    """`count` connections started as an attacker would, without waiting for each (from both sources)."""
    sockets = []
    for n in range(count):
        sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        sock.setblocking(False)
        sock.bind((ATTACKER_SOURCES[n % 2], 0))
        sock.connect_ex(_address(deputy))
        sockets.append(sock)
    return sockets


def _read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes; a server that never closes fails the test at DEADLINE."""
    received = b""
    while chunk := sock.recv(4096):
        received += chunk
    return received


def _closed_by_server(sock: socket.socket) -> bool:
    poller = select.poll()  # not select(): a worker holding many descriptors has some past FD_SETSIZE
    poller.register(sock, select.POLLIN)
    if not poller.poll(0):
        return False
    try:
        return sock.recv(1) == b""
    except OSError:
        return True


def _still_open(sockets: list[socket.socket], at_most: int) -> int:
    """How many of `sockets` the server keeps open, polled until at most `at_most` or DEADLINE."""
    deadline = time.monotonic() + DEADLINE
    while (still_open := sum(not _closed_by_server(s) for s in sockets)) > at_most and time.monotonic() < deadline:
        time.sleep(0.2)
    return still_open


async def _call_tools(deputy: RunningDeputy, calls: int) -> list[object]:
    """A real agent (client credentials, the official SDK) calls ``add`` `calls` times in one session."""
    provider = ClientCredentialsOAuthProvider(server_url=deputy.resource("demo"), storage=InMemoryTokenStorage(),
                                              client_id=SECRET_AGENT, client_secret=SECRET_AGENT_SECRET,
                                              issuer=deputy.url)
    results: list[object] = []
    async with (
        httpx2.AsyncClient(auth=provider, timeout=DEADLINE) as http,
        Client(streamable_http_client(deputy.resource("demo"), http_client=http), mode="legacy") as client,
    ):
        for n in range(calls):
            result = await client.call_tool("add", {"a": n, "b": 1})
            assert not result.is_error
            results.append(result.structured_content)
    return results


def _expected(calls: int) -> list[object]:
    return [{"result": n + 1} for n in range(calls)]


def _alive(deputy: RunningDeputy) -> bool:
    assert deputy.process is not None
    return deputy.process.poll() is None


def _log(deputy: RunningDeputy) -> str:
    return (deputy.data_dir.parent / "deputy.log").read_text(errors="replace")


def _soft_open_files(limit: int) -> Callable[[], None]:
    """For the child before it starts: a soft descriptor limit of `limit`, the hard one unchanged."""
    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    return lower


def _open_files(limit: int) -> Callable[[], None]:
    """For the child before it starts: soft and hard descriptor limits of `limit` (it cannot raise them)."""
    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
    return lower


# --- header deadline -------------------------------------------------------------------------


# The soft descriptor limit `quick` starts with, under the hard one, which Deputy must raise it to.
LOWERED_SOFT_LIMIT = min(1024, resource.getrlimit(resource.RLIMIT_NOFILE)[1] // 2)


@pytest.fixture(scope="module")
def quick(upstream_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDeputy]:
    """header_timeout = 1 s; started with a soft descriptor limit below the hard one."""
    directory = tmp_path_factory.mktemp("deputy-header-timeout")
    with _deputy(directory, upstream_url, _limits(header_timeout=1.0, idle_timeout=1.0),
                 _soft_open_files(LOWERED_SOFT_LIMIT)) as running:
        yield running


def test_a_connection_that_sends_nothing_is_closed(quick: RunningDeputy) -> None:
    with _connect(quick) as sock:
        assert _read_until_closed(sock) == b""  # nothing had begun: closed without a word


@pytest.mark.parametrize("partial", [
    b"GET /hea",  # half a request line
    b"GET /healthz HTTP/1.1\r\n",  # the request line, no headers
    b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ",  # headers never finished
], ids=["half-request-line", "request-line-only", "unfinished-headers"])
def test_a_connection_that_sends_part_of_its_headers_is_told_408_and_closed(
        quick: RunningDeputy, partial: bytes) -> None:
    with _connect(quick) as sock:
        sock.sendall(partial)
        assert _read_until_closed(sock).startswith(b"HTTP/1.1 408 ")


def test_dribbling_bytes_between_requests_does_not_keep_a_connection(quick: RunningDeputy) -> None:
    """After one answered request, bare CRLFs and a slow second request line are cut like the first."""
    with _connect(quick) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        first = sock.recv(4096)
        assert first.startswith(b"HTTP/1.1 200 ")
        sock.sendall(b"\r\n")
        sock.sendall(b"GE")
        assert b"HTTP/1.1 408 " in _read_until_closed(sock)


@pytest.mark.parametrize("head", [
    b"GET /healthz?" + b"q" * 16_384,  # an endless request line
    b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"v" * 16_384,  # an endless header value
    b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n" + b"X-Many: v\r\n" * 1_600,  # endless header fields
], ids=["request-line", "header-value", "header-fields"])
def test_a_header_block_past_64_kib_is_told_431_and_closed(quick: RunningDeputy, head: bytes) -> None:
    """The request line and headers are bounded while they arrive, not buffered whole by the parser."""
    sent = 0
    with _connect(quick) as sock:
        sock.sendall(head)
        sent += len(head)
        filler = b"v" * 4096 if b"X-Big" in head or b"?" in head else b"X-Many: v\r\n" * 400
        try:
            while sent < 8 * 1024 * 1024:  # the old code took all of this and kept waiting
                sock.sendall(filler)
                sent += len(filler)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = _read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 431 "), answer[:80]
    assert sent < 8 * 1024 * 1024


def test_a_request_with_ordinary_headers_and_a_body_in_one_read_is_served(quick: RunningDeputy) -> None:
    """Headers under the bound that arrive in one read with a large body are not mistaken for a large header."""
    body = b"x" * 60_000
    with _connect(quick) as sock:
        sock.sendall(b"POST /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: "
                     + str(len(body)).encode() + b"\r\n" + b"X-Pad: v\r\n" * 500 + b"\r\n" + body)
        answer = _read_until_closed(sock)  # the 413 closes the connection
    # The application saw the request: its own body cap (8 KiB for this route) answered, not the header bound.
    assert answer.startswith(b"HTTP/1.1 413 ") and b"request body is larger" in answer


def test_the_descriptor_limit_is_raised_to_the_hard_limit_at_start(quick: RunningDeputy) -> None:
    assert quick.process is not None
    soft, hard = resource.prlimit(quick.process.pid, resource.RLIMIT_NOFILE)
    assert soft == hard > LOWERED_SOFT_LIMIT


# --- connection count ------------------------------------------------------------------------


async def test_a_thousand_idle_sockets_hold_at_most_max_connections_and_real_clients_are_served(
        upstream_url: str, tmp_path: Path) -> None:
    # A long header_timeout: what closes the idle sockets here is the count, not the deadline.
    with _deputy(tmp_path, upstream_url, _limits(max_connections=64, header_timeout=120.0)) as deputy, \
            ExitStack() as stack:
        idle = _open_idle(deputy, 1000, stack)
        assert await _call_tools(deputy, 5) == _expected(5)
        async with httpx.AsyncClient(timeout=DEADLINE) as http:
            assert (await http.get(f"{deputy.url}/healthz")).status_code == 200
        assert _still_open(idle, at_most=64) <= 64  # the oldest silent sockets were cut to make room
        assert _alive(deputy)


def _open_trickling(deputy: RunningDeputy, count: int, stack: ExitStack) -> list[socket.socket]:
    """`count` connections (from both attacker sources) that send a request's headers and one byte of its
    60,000-byte body, then nothing: each holds Deputy's connection until ``body_timeout``."""
    head = (b"POST /token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
            b"Content-Length: 60000\r\n\r\ng")
    sockets = []
    for n in range(count):
        sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
        sock.settimeout(DEADLINE)
        sock.bind((ATTACKER_SOURCES[n % 2], 0))
        try:
            sock.connect(_address(deputy))
            sock.sendall(head)
        except OSError:  # cut for room already: what the guard is for
            pass
        sockets.append(sock)
    return sockets


async def test_connections_trickling_a_body_are_cut_for_room_like_silent_ones(upstream_url: str,
                                                                               tmp_path: Path) -> None:
    """Headers sent whole, then a body a byte at a time: before, such a connection counted as serving and was never
    cut, so max_connections of them from one address shut every new client out until body_timeout."""
    with _deputy(tmp_path, upstream_url, _limits(max_connections=64, header_timeout=120.0, body_timeout=120.0)) \
            as deputy, ExitStack() as stack:
        trickling = _open_trickling(deputy, 300, stack)
        assert await _call_tools(deputy, 5) == _expected(5)
        async with httpx.AsyncClient(timeout=DEADLINE) as http:
            assert (await http.get(f"{deputy.url}/healthz")).status_code == 200
        assert _still_open(trickling, at_most=64) <= 64
        assert _alive(deputy)


# --- the flood -------------------------------------------------------------------------------


FLOODED_DEPUTY_FILES = 8192


def _counts(report: list[str], what: str) -> list[int]:
    return [int(line.split()[1]) for line in report if line.startswith(f"{what} ")]


@contextmanager
def _flood(deputy: RunningDeputy, count_per_source: int) -> Iterator[list[str]]:
    """One attacker process per source address, each holding `count_per_source` half-open connections.

    Yields once every attacker's connections have been taken by the server's kernel (whatever Deputy then
    did with them); the list holds the lines the attackers printed.
    """
    host, port = _address(deputy)
    attackers = [subprocess.Popen([sys.executable, "-m", "tests.support.connection_flood", source, host, str(port),
                                   str(count_per_source)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                 for source in ATTACKER_SOURCES]
    report: list[str] = []
    try:
        for attacker in attackers:
            assert attacker.stdout is not None
            report.append(attacker.stdout.readline().strip())
        yield report
    finally:
        for attacker in attackers:
            attacker.terminate()
        for attacker in attackers:
            out, _ = attacker.communicate(timeout=30)
            report.extend(out.splitlines())


async def test_twenty_thousand_half_open_connections_from_two_sources_leave_tool_calls_working(
        upstream_url: str, tmp_path: Path) -> None:
    # Fewer descriptors than the attack has connections, so that without the guard they run out (the
    # kernel completes some handshakes that never reach accept(), so 20,000 may not fill 20,000).
    with _deputy(tmp_path, upstream_url, _limits(max_connections=1024, header_timeout=2.0),
                 _open_files(FLOODED_DEPUTY_FILES)) as deputy:
        assert await _call_tools(deputy, 1) == _expected(1)
        with _flood(deputy, 10_000) as report:
            assert sum(_counts(report, "connected")) > FLOODED_DEPUTY_FILES  # more than Deputy could hold
            for _ in range(3):  # each round a new client: new connections, while the attackers refill theirs
                async with httpx.AsyncClient(timeout=DEADLINE) as http:
                    assert (await http.get(f"{deputy.url}/healthz")).status_code == 200
                assert await _call_tools(deputy, 3) == _expected(3)
            assert _alive(deputy)
        assert sum(_counts(report, "attempts")) >= 20_000
        assert await _call_tools(deputy, 3) == _expected(3)
        assert _alive(deputy)
        assert "Traceback" not in _log(deputy)


async def test_a_deputy_with_256_descriptors_survives_a_thousand_connections_and_serves(
        upstream_url: str, tmp_path: Path) -> None:
    with _deputy(tmp_path, upstream_url, _limits(header_timeout=120.0), _open_files(256)) as deputy, \
            ExitStack() as stack:
        _open_idle(deputy, 1000, stack)
        assert await _call_tools(deputy, 5) == _expected(5)
        async with httpx.AsyncClient(timeout=DEADLINE) as http:
            assert (await http.get(f"{deputy.url}/healthz")).status_code == 200
        assert _alive(deputy)
        assert "Traceback" not in _log(deputy)
