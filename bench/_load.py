"""A deliberately small HTTP/1.1 keep-alive load generator (asyncio protocol, run under uvloop).

On a 2-core machine the client competes with the server for CPU, so it does as
little as it can per call: each connection writes one pre-built request and
parses only the status line, ``Content-Length`` (or chunked framing) and the
body. It is not a general HTTP client: no redirects, no compression, no
pipelining; one request in flight per connection.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field


class HttpConnection(asyncio.Protocol):
    """One keep-alive connection with at most one request in flight."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @classmethod
    async def open(cls, host: str, port: int) -> HttpConnection:
        _, protocol = await asyncio.get_running_loop().create_connection(cls, host, port)
        return protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("connection closed by server"))
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.waiter is not None:
            self._try_parse()

    def _try_parse(self) -> None:
        buf = self.buffer
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(buf[:end]).lower()
        status = int(head[9:12])
        start = end + 4
        i = head.find(b"\r\ncontent-length:")
        if i >= 0:
            j = head.find(b"\r\n", i + 2)
            length = int(head[i + 17:j if j >= 0 else len(head)])
            if len(buf) < start + length:
                return
            body = bytes(buf[start:start + length])
            del buf[:start + length]
        elif b"\r\ntransfer-encoding: chunked" in head:
            body_parts: list[bytes] = []
            pos = start
            while True:
                line_end = buf.find(b"\r\n", pos)
                if line_end < 0:
                    return
                size = int(bytes(buf[pos:line_end]).split(b";")[0], 16)
                if len(buf) < line_end + 2 + size + 2:
                    return
                if size == 0:
                    pos = line_end + 4  # no trailers expected
                    break
                body_parts.append(bytes(buf[line_end + 2:line_end + 2 + size]))
                pos = line_end + 2 + size + 2
            body = b"".join(body_parts)
            del buf[:pos]
        else:
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_exception(ValueError("response without Content-Length or chunked framing"))
            return
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result((status, body))

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        assert self.transport is not None
        if self.transport.is_closing():
            raise ConnectionError("connection closed")
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)
        if self.buffer:
            self._try_parse()
        return await self.waiter

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def build_post(host: str, port: int, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@dataclass
class RunResult:
    calls: int
    ok: int
    errors: int
    wall: float
    latencies_ns: list[int] = field(repr=False)
    first_error: str | None = None

    @property
    def rate(self) -> float:
        return self.ok / self.wall if self.wall > 0 else 0.0

    def percentile_ms(self, q: float) -> float:
        if not self.latencies_ns:
            return float("nan")
        ordered = sorted(self.latencies_ns)
        index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
        return ordered[index] / 1e6


async def run_load(host: str, port: int, raw: bytes, concurrency: int, ok_marker: bytes,
                   calls: int | None = None, seconds: float | None = None) -> RunResult:
    """Send ``calls`` requests or as many as fit in ``seconds`` (whichever ends first) over ``concurrency``
    connections.

    The connections are opened before the clock starts. A call succeeds when the
    status is 200 and the body contains ``ok_marker``; anything else is an error.
    """
    if calls is None and seconds is None:
        raise ValueError("give calls, seconds or both")
    connections = [await HttpConnection.open(host, port) for _ in range(concurrency)]
    remaining = calls if calls is not None else 1 << 62
    deadline = time.perf_counter_ns() + int((seconds or 0) * 1e9) if seconds is not None else 1 << 62
    sent = 0
    latencies: list[int] = []
    errors = 0
    first_error: str | None = None
    clock = time.perf_counter_ns

    async def worker(conn: HttpConnection) -> None:
        nonlocal remaining, sent, errors, first_error
        while remaining > 0:
            t0 = clock()
            if t0 >= deadline:
                return
            remaining -= 1
            sent += 1
            try:
                status, body = await conn.request(raw)
            except (ConnectionError, ValueError) as exc:
                errors += 1
                first_error = first_error or f"{type(exc).__name__}: {exc}"
                return
            if status == 200 and ok_marker in body:
                latencies.append(clock() - t0)
            else:
                errors += 1
                first_error = first_error or f"HTTP {status}: {body[:200]!r}"

    started = time.perf_counter()
    await asyncio.gather(*(worker(c) for c in connections))
    wall = time.perf_counter() - started
    for c in connections:
        c.close()
    # Calls left unsent while time remained mean every connection broke: count them as failed.
    unsent = remaining if seconds is None and remaining > 0 else 0
    if seconds is not None and sent == 0:
        unsent = 1
    return RunResult(calls=sent + unsent, ok=len(latencies), errors=errors + unsent, wall=wall,
                     latencies_ns=latencies, first_error=first_error)


async def one_call(host: str, port: int, raw: bytes) -> tuple[int, bytes]:
    conn = await HttpConnection.open(host, port)
    try:
        return await conn.request(raw)
    finally:
        conn.close()
