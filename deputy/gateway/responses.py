"""Small raw-ASGI responses and stream relaying for the gateway's hot path (no framework objects per call).

A streamed answer always ends with a terminated body (ASGI HTTP ``more_body: False``; for HTTP/1.1 the last
chunk, RFC 9112 §7.1), also when its upstream breaks off mid-stream: the client keeps what was relayed and
sees a clean end, and the ending says the answer is incomplete (:data:`INCOMPLETE`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Iterable
from enum import Enum
from typing import Any, Final, Literal, TypeVar

import anyio
from starlette.types import Message, Receive, Send

JSONRPC_PARSE_ERROR = -32700
JSONRPC_INVALID_REQUEST = -32600
JSONRPC_INTERNAL_ERROR = -32603
# Retry-After (RFC 9110 §10.2.3) on Deputy's own 429 and 503 answers: long enough that a client retrying in a loop
# costs little, short enough that a place freed is soon used.
RETRY_AFTER = b"5"
# Set on the last body message of an answer cut short (:func:`end_body`), for the audit stage's ``call.outcome``
# record; a gateway-internal key that ASGI servers ignore (they read only ``body`` and ``more_body``).
INCOMPLETE = "deputy.incomplete"
T = TypeVar("T")


class Answered(Enum):
    """A step refused the request and has sent the answer: the gateway does nothing more with it."""

    ANSWERED = 0


ANSWERED = Answered.ANSWERED


async def send_json(send: Send, status: int, body: Any, headers: Iterable[tuple[bytes, bytes]] = (), *,
                    unread: bool = False) -> None:
    """``unread``: the client has already gone, so the answer is marked :data:`INCOMPLETE` for the call's record."""
    payload = json.dumps(body, separators=(",", ":")).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                    (b"cache-control", b"no-store"), *headers],
    })
    last: Message = {"type": "http.response.body", "body": payload}
    if unread:
        last[INCOMPLETE] = True
    await send(last)


def jsonrpc_error(code: int, message: str, data: Any = None, request_id: str | int | None = None) -> dict[str, Any]:
    """A JSON-RPC error response; ``request_id`` is the request's ``id`` when it could be read (else null)."""
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": request_id, "error": error}


async def end_body(send: Send, *, complete: bool = True) -> None:
    """End a streamed response; ``complete=False``: it ends because its source broke off or its reader left."""
    message: Message = {"type": "http.response.body", "body": b"", "more_body": False}
    if not complete:
        message[INCOMPLETE] = True
    await send(message)


async def client_left(receive: Receive) -> None:
    """Returns once the client has gone (ASGI ``http.disconnect``); for a request whose body has been read whole."""
    while (await receive())["type"] != "http.disconnect":
        pass


class Waited(Enum):
    CLIENT_LEFT = "client left"


CLIENT_LEFT: Final = Waited.CLIENT_LEFT


async def unless_client_leaves(work: Awaitable[T], receive: Receive) -> T | Literal[Waited.CLIENT_LEFT]:
    """``work``'s result, or :data:`CLIENT_LEFT` when the client goes away first; ``work`` is then cancelled and
    waited for, so what it had taken in that same moment is given back by its own cancellation handling before this
    returns."""
    task = asyncio.ensure_future(work)
    left = asyncio.ensure_future(client_left(receive))
    try:
        await asyncio.wait((task, left), return_when=asyncio.FIRST_COMPLETED)
    finally:
        left.cancel()
        task.cancel()  # nothing once it is done
    await asyncio.wait((task,))
    return CLIENT_LEFT if task.cancelled() else task.result()


async def relay_until_disconnect(chunks: AsyncIterator[bytes], receive: Receive, send: Send,
                                 ends: asyncio.Event | None = None) -> bool:
    """Send each chunk as it comes; stop waiting for more as soon as the client goes away, or ``ends`` is set.

    Returns whether the stream ended as it should: ``chunks`` ran out, or ``ends`` was set (a GET stream closed
    by a shutdown: its client opens it again); False: the client left first. An error raised by ``chunks`` (an
    upstream that broke off) is raised as it is, not wrapped in the task group's ExceptionGroup, so the
    caller's ``except`` for its transport's errors sees it.
    """
    broke_off: Exception | None = None
    ran_out = False
    async with anyio.create_task_group() as group:

        async def watch() -> None:
            await client_left(receive)
            group.cancel_scope.cancel()

        async def end_when_told(ends: asyncio.Event) -> None:
            nonlocal ran_out
            await ends.wait()
            ran_out = True
            group.cancel_scope.cancel()

        group.start_soon(watch)
        if ends is not None:
            group.start_soon(end_when_told, ends)
        try:
            async for chunk in chunks:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            ran_out = True
        except Exception as exc:  # re-raised below, outside the group
            broke_off = exc
        group.cancel_scope.cancel()
    if broke_off is not None:
        raise broke_off
    return ran_out
