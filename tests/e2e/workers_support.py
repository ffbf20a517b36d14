"""What the ``serve --workers N`` tests share: the workers' pids, fresh connections, a raw request on one socket."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path
from typing import Any

import httpx

from tests.support.deputy_process import RunningDeputy

CALL = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "add", "arguments": {"a": 3, "b": 4}}}


def workers_of(deputy: RunningDeputy) -> list[int]:
    """The worker processes of a running ``deputy serve --workers N`` (the children of its process)."""
    assert deputy.process is not None
    pid = deputy.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return sorted(int(child) for child in children)


def wait_for_workers(deputy: RunningDeputy, count: int, *, other_than: frozenset[int] | set[int] = frozenset(),
                     within: float = 60.0) -> list[int]:
    """The workers once ``count`` of them run, none in ``other_than``, and the gateway answers."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        pids = workers_of(deputy)
        if len(pids) == count and not set(pids) & other_than and all(_serves(deputy, i) for i in range(count)):
            return pids
        time.sleep(0.2)
    raise AssertionError(f"workers {workers_of(deputy)} did not become {count} fresh ones within {within}s")


def _serves(deputy: RunningDeputy, index: int) -> bool:
    """Whether worker ``index`` accepts on its private socket (bound once its application has started)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(worker_socket(deputy, index)))
        except OSError:
            return False
    return True


def worker_socket(deputy: RunningDeputy, index: int) -> Path:
    return deputy.data_dir / "run" / f"worker-{index}.sock"


def sse_messages(text: str) -> list[dict[str, Any]]:
    return [json.loads(line[len("data: "):]) for line in text.splitlines() if line.startswith("data: ")]


def fresh_client() -> httpx.AsyncClient:
    """A client that opens a connection per request. One for many requests: building a client costs tens of
    milliseconds of CPU (its TLS context), and many built at once on a loaded machine can hold the event loop for
    longer than Deputy's header deadline between a connection's opening and its request."""
    return httpx.AsyncClient(timeout=60, headers={"Connection": "close"},
                             limits=httpx.Limits(max_keepalive_connections=0))


async def fresh_post(deputy: RunningDeputy, token: str, body: dict[str, Any], server: str = "demo",
                     session: str | None = None, extra: dict[str, str] | None = None) -> httpx.Response:
    """One POST on a connection of its own: the kernel gives each new connection to any worker."""
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
               "Authorization": f"Bearer {token}", **(extra or {})}
    if session is not None:
        headers["Mcp-Session-Id"] = session
    async with fresh_client() as http:
        return await http.post(deputy.resource(server), json=body, headers=headers)


async def fresh_posts(deputy: RunningDeputy, token: str, bodies: list[dict[str, Any]], server: str = "demo",
                      session: str | None = None) -> list[httpx.Response]:
    """Concurrent POSTs, each on a connection of its own, through one client."""
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
               "Authorization": f"Bearer {token}"}
    if session is not None:
        headers["Mcp-Session-Id"] = session
    async with fresh_client() as http:
        return list(await asyncio.gather(*(http.post(deputy.resource(server), json=body, headers=headers)
                                           for body in bodies)))


def raw_request(port: int, method: str, path: str, headers: dict[str, str], body: bytes = b"",
                declared: int | None = None) -> socket.socket:
    """A connected socket on which a whole HTTP/1.1 request has been sent (the answer is read by
    :func:`read_answer`): connect() returns once the kernel has queued the connection for accept."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=60)
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close",
             f"Content-Length: {len(body) if declared is None else declared}",
             *(f"{name}: {value}" for name, value in headers.items())]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
    return sock


def read_answer(sock: socket.socket) -> tuple[int, str]:
    """The status and the (de-chunked) body of the answer on ``sock``."""
    data = b""
    with sock:
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if b"transfer-encoding: chunked" in head.lower():
        body = _dechunk(body)
    return status, body.decode()


def _dechunk(body: bytes) -> bytes:
    out = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += rest[:size]
        body = rest[size + 2:]
    return out


def accept_queue(port: int) -> int | None:
    """How many connections wait in the accept queue of the socket listening on 127.0.0.1:``port``
    (/proc/net/tcp: a listening socket's rx_queue)."""
    wanted = f"0100007F:{port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == wanted and fields[3] == "0A":  # state 0A: LISTEN
            return int(fields[4].split(":")[1], 16)
    return None


def wait_accepted(port: int, within: float = 30.0) -> None:
    """Until the listener's accept queue is empty: a worker has taken the connection just made."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if accept_queue(port) == 0:
            return
        time.sleep(0.02)
    raise AssertionError(f"no worker accepted the connection on port {port} within {within}s")


def worker_pid(deputy: RunningDeputy, index: int) -> int:
    """The pid of worker ``index``: the worker holding the socket listening at ``run/worker-<index>.sock``."""
    path = str(worker_socket(deputy, index))
    inodes = {fields[6] for fields in (line.split() for line in Path("/proc/net/unix").read_text().splitlines()[1:])
              if len(fields) >= 8 and fields[7] == path}
    for pid in workers_of(deputy):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = fd.readlink().name
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                return pid
    raise AssertionError(f"no worker listens at {path}")
