"""Input size and time on every non-gateway route (issue 11, findings 3 and 8e; RFC 9110 §15.5.9, §15.5.14).

Against a real ``deputy serve``: an oversized body is refused with 413 after Deputy read about its
cap (the client streams it from a generator that counts what was taken), forms are small, a slow
body is cut with 408, memory stays near its baseline under many concurrent oversized requests, and
a client that leaves mid-body leaves no traceback. The limits are the same on either storage
backend (nothing here reaches the database before the refusal), so one SQLite Deputy serves them.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from deputy.request_limits import MAX_QUERY_STRING, OAUTH_FORM_BODY, PAGE_FORM_BODY, REGISTRATION_BODY
from tests.security.helpers import oauth_error
from tests.support.deputy_process import CONFIDENTIAL_CLIENT, CONFIDENTIAL_SECRET, RunningDeputy, running_deputy
from tests.support.oauth_flow import tokens_for_alice

MIB = 1024 * 1024
ATTACK_BODY = 600 * MIB


def _socket_buffers() -> int:
    """What the client can hand to its socket that Deputy never read: the sender's and the receiver's buffers, each
    autotuned by Linux up to the maximum of ``tcp_wmem``/``tcp_rmem`` (4 MiB and 32 MiB where they were written),
    and one chunk of the client's. A guess of 8 MiB in all failed in CI: 12.4 MiB taken against a 4 + 8 MiB bound."""
    try:
        sent = int(Path("/proc/sys/net/ipv4/tcp_wmem").read_text().split()[2])
        received = int(Path("/proc/sys/net/ipv4/tcp_rmem").read_text().split()[2])
    except (OSError, IndexError, ValueError):  # not Linux: its defaults are smaller
        return 8 * MIB
    return sent + received + MIB


# Still far below the 600 MB sent: a body read on past its cap would pass it by hundreds of MiB.
SOCKET_BUFFERS = _socket_buffers()
# RSS may move by allocator noise and lazily imported code; 600 MB bodies would move it by gigabytes.
RSS_SLACK = 64 * MIB
FORM = "application/x-www-form-urlencoded"

ROUTES = [  # (path, content type, cap): JSON, an OAuth form endpoint, a page's form
    ("/register", "application/json", REGISTRATION_BODY),
    ("/token", FORM, OAUTH_FORM_BODY),
    ("/authorize/login", FORM, PAGE_FORM_BODY),
]


@pytest.fixture(scope="module")
def limited(upstream_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDeputy]:
    directory = tmp_path_factory.mktemp("request-limits")
    with running_deputy(directory, f"sqlite+aiosqlite:///{directory / 'deputy.db'}", upstream_url,
                        "\n[limits]\nbody_timeout = 1\n") as deputy:
        yield deputy


class CountingBody:
    """A request body of `total` bytes made on demand; `consumed` is how much the client took."""

    def __init__(self, total: int, chunk: int = 64 * 1024) -> None:
        self.total = total
        self.block = b"a" * chunk
        self.consumed = 0

    def __iter__(self) -> Iterator[bytes]:
        while self.consumed < self.total:
            self.consumed += len(self.block)
            yield self.block


def post_streamed(url: str, content_type: str, body: CountingBody, declare_length: bool) -> httpx.Response:
    headers = {"content-type": content_type}
    if declare_length:
        headers["content-length"] = str(body.total)  # otherwise httpx sends it chunked
    return httpx.post(url, content=body, headers=headers, timeout=60)


def log_of(deputy: RunningDeputy) -> str:
    return (deputy.data_dir.parent / "deputy.log").read_text(errors="replace")


def serve_pid(deputy: RunningDeputy) -> int:
    """The pid of this Deputy's `deputy serve` process: the one `running_deputy` started (a process forked from
    tests.support.forked_deputy's host shows the host's /proc cmdline and environ, so it is not found by those)."""
    assert deputy.process is not None and deputy.process.poll() is None, "deputy serve is not running"
    return deputy.process.pid


def rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise LookupError("VmRSS")


def raw_connection(deputy: RunningDeputy) -> socket.socket:
    parts = urlsplit(deputy.url)
    return socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=30)


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


@pytest.mark.parametrize("declare_length", [True, False], ids=["content-length", "chunked"])
@pytest.mark.parametrize(("path", "content_type", "cap"), ROUTES, ids=[route[0] for route in ROUTES])
def test_oversized_body_is_refused_while_reading(limited: RunningDeputy, path: str, content_type: str, cap: int,
                                                declare_length: bool) -> None:
    """Finding 3: a 600 MB body → 413 as soon as the cap is passed; Deputy never reads the rest."""
    body = CountingBody(ATTACK_BODY)
    response = post_streamed(limited.url + path, content_type, body, declare_length)
    assert response.status_code == 413
    assert oauth_error(response) == "invalid_request"
    assert response.headers["connection"] == "close"
    assert body.consumed <= cap + SOCKET_BUFFERS, f"{body.consumed} bytes were taken for a {cap}-byte cap"


@pytest.mark.parametrize(("method", "path", "status"), [("POST", "/healthz", 405),
                                                     ("GET", "/.well-known/jwks.json", 200)])
def test_a_body_nobody_reads_is_not_drained(limited: RunningDeputy, method: str, path: str, status: int) -> None:
    """A chunked 600 MB body to a route that never reads it: answered, then the connection closed, not drained."""
    body = CountingBody(ATTACK_BODY)
    response = httpx.request(method, limited.url + path, content=body, timeout=60)
    assert response.status_code == status
    assert response.headers["connection"] == "close"
    assert body.consumed <= SOCKET_BUFFERS, f"{body.consumed} bytes were taken by a route that reads none"


def test_a_form_with_a_thousand_fields_is_refused(limited: RunningDeputy) -> None:
    """Finding 3: a small field count. A revocation Deputy would answer 200 is refused for its 1,000 fields."""
    fields = {f"f{index}": "x" for index in range(999)}  # with `token`, 1,000: within Starlette's default
    response = httpx.post(f"{limited.url}/revoke", data={"token": "not-a-token", **fields},
                          auth=(CONFIDENTIAL_CLIENT, CONFIDENTIAL_SECRET))
    assert response.status_code == 400
    assert oauth_error(response) == "invalid_request"
    control = httpx.post(f"{limited.url}/revoke", data={"token": "not-a-token"},
                         auth=(CONFIDENTIAL_CLIENT, CONFIDENTIAL_SECRET))
    assert control.status_code == 200  # RFC 7009 §2.2: an unknown token is not an error


@pytest.mark.parametrize(("path", "field"), [("/revoke", "token"), ("/authorize/login", "password")])
def test_a_one_megabyte_field_is_refused(limited: RunningDeputy, path: str, field: str) -> None:
    """Finding 3: a small field size. One 1 MB field is past every form's cap → 413."""
    response = httpx.post(f"{limited.url}{path}", data={field: "x" * MIB},
                          auth=(CONFIDENTIAL_CLIENT, CONFIDENTIAL_SECRET))
    assert response.status_code == 413


def test_deeply_nested_registration_json_is_refused_quietly(limited: RunningDeputy) -> None:
    """Found by the reader's properties: JSON nested past the parser's stack (4 KiB of `[`) → 400, no 500."""
    response = httpx.post(f"{limited.url}/register", content=b"[" * 4096 + b"]" * 4096,
                          headers={"content-type": "application/json"})
    assert response.status_code == 400
    assert oauth_error(response) == "invalid_client_metadata"
    assert "RecursionError" not in log_of(limited)


def test_a_long_query_string_is_refused(limited: RunningDeputy) -> None:
    """A query string past its cap → 414 (RFC 9110 §15.5.15), before the authorization request is parsed."""
    response = httpx.get(f"{limited.url}/authorize", params={"state": "s" * (MAX_QUERY_STRING + 1)})
    assert response.status_code == 414


def test_a_slow_body_is_cut(limited: RunningDeputy) -> None:
    """A body that has not arrived within [limits] body_timeout (1 s here) → 408 and the connection closed."""
    with raw_connection(limited) as connection:
        connection.sendall(b"POST /token HTTP/1.1\r\nHost: deputy\r\ncontent-type: " + FORM.encode()
                           + b"\r\ncontent-length: 100\r\n\r\ngrant_type=")
        answer = b""
        while chunk := connection.recv(65536):  # ends when Deputy closes the connection
            answer += chunk
    assert status_of(answer) == 408


def test_memory_returns_to_baseline_after_many_oversized_requests(limited: RunningDeputy) -> None:
    """Finding 3: RSS stays within a bound during 48 concurrent 600 MB requests and afterwards."""
    pid = serve_pid(limited)
    for path, content_type, _cap in ROUTES:  # every route's code is loaded before the baseline
        post_streamed(limited.url + path, content_type, CountingBody(2 * MIB), declare_length=False)
    baseline = rss(pid)
    peak = baseline
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.01):  # the sampling interval, not a synchronisation
            peak = max(peak, rss(pid))

    def attack(index: int) -> int:
        path, content_type, _cap = ROUTES[index % len(ROUTES)]
        return post_streamed(limited.url + path, content_type, CountingBody(ATTACK_BODY),
                             declare_length=index % 2 == 0).status_code

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with ThreadPoolExecutor(max_workers=16) as pool:
            statuses = list(pool.map(attack, range(48)))
    finally:
        done.set()
        sampler.join()
    after = rss(pid)
    assert peak - baseline <= RSS_SLACK, f"RSS rose from {baseline} to {peak} bytes during the attack"
    assert after - baseline <= RSS_SLACK, f"RSS stayed at {after} bytes after the attack (baseline {baseline})"
    assert statuses == [413] * 48


def test_a_client_that_leaves_mid_body_leaves_no_traceback(limited: RunningDeputy) -> None:
    """Finding 8e: a client that disconnects while its form or JSON is read ends quietly."""
    for path, content_type in (("/token", FORM), ("/register", "application/json"), ("/authorize/login", FORM)):
        with raw_connection(limited) as connection:
            connection.sendall(f"POST {path} HTTP/1.1\r\nHost: deputy\r\ncontent-type: {content_type}\r\n"
                               "content-length: 1000\r\n\r\nclient_id=".encode())
    # Answered after the three disconnects were seen by the same event loop: their handling is over.
    assert httpx.get(f"{limited.url}/healthz").status_code == 200
    log = log_of(limited)
    assert "Traceback" not in log
    assert "ClientDisconnect" not in log


# --- the gateway (/mcp/NAME) reads JSON-RPC bodies under its own cap, after the bearer check ------------------


@pytest.fixture(scope="module")
def bearer(limited: RunningDeputy) -> str:
    token, _refresh = asyncio.run(tokens_for_alice(limited))
    return token


def gateway_head(deputy: RunningDeputy, token: str, extra: str) -> bytes:
    return (f"POST /mcp/demo HTTP/1.1\r\nHost: {urlsplit(deputy.url).netloc}\r\nAuthorization: Bearer {token}\r\n"
            "Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
            f"MCP-Protocol-Version: 2025-06-18\r\n{extra}\r\n").encode()


def answer_until_closed(connection: socket.socket) -> bytes:
    answer = b""
    while chunk := connection.recv(65536):  # ends when Deputy closes the connection
        answer += chunk
    return answer


def test_the_gateway_refuses_a_declared_oversized_body_before_reading_it(limited: RunningDeputy, bearer: str) -> None:
    """A Content-Length past the gateway's 4 MiB cap → 413 at once, the connection closed, nothing read."""
    with raw_connection(limited) as connection:
        connection.sendall(gateway_head(limited, bearer, f"Content-Length: {ATTACK_BODY}\r\n"))
        answer = answer_until_closed(connection)
    assert status_of(answer) == 413
    assert b"connection: close" in answer.lower()


def test_the_gateway_cuts_a_chunked_body_past_its_cap(limited: RunningDeputy, bearer: str) -> None:
    body = CountingBody(ATTACK_BODY)
    response = httpx.post(limited.resource("demo"), content=body, timeout=60, headers={
        "Authorization": f"Bearer {bearer}", "Content-Type": "application/json",
        "Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-06-18"})
    assert response.status_code == 413
    assert response.headers["connection"] == "close"
    assert body.consumed <= 4 * MIB + SOCKET_BUFFERS


def test_the_gateway_cuts_a_slow_body(limited: RunningDeputy, bearer: str) -> None:
    """An authenticated client that trickles its body is cut after [limits] body_timeout (1 s here): 408."""
    with raw_connection(limited) as connection:
        connection.sendall(gateway_head(limited, bearer, "Content-Length: 100\r\n") + b'{"jsonrpc":')
        answer = answer_until_closed(connection)
    assert status_of(answer) == 408


def test_a_client_that_leaves_mid_gateway_body_is_not_answered_or_logged(limited: RunningDeputy, bearer: str) -> None:
    with raw_connection(limited) as connection:
        connection.sendall(gateway_head(limited, bearer, "Content-Length: 1000\r\n") + b'{"jsonrpc":"2.0",')
    assert httpx.get(f"{limited.url}/healthz").status_code == 200
    log = log_of(limited)
    assert "Traceback" not in log
    assert "-32700" not in log
