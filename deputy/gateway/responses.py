"""Small raw-ASGI responses and stream relaying for the gateway's hot path (no framework objects per call)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from typing import Any

import anyio
from starlette.types import Receive, Send

JSONRPC_PARSE_ERROR = -32700
JSONRPC_INVALID_REQUEST = -32600
JSONRPC_INTERNAL_ERROR = -32603


async def send_json(send: Send, status: int, body: Any, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    payload = json.dumps(body, separators=(",", ":")).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                    (b"cache-control", b"no-store"), *headers],
    })
    await send({"type": "http.response.body", "body": payload})


def jsonrpc_error(code: int, message: str, data: Any = None, request_id: str | int | None = None) -> dict[str, Any]:
    """A JSON-RPC error response; ``request_id`` is the request's ``id`` when it could be read (else null)."""
    error: dict[str, Any] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return {"jsonrpc": "2.0", "id": request_id, "error": error}


async def relay_until_disconnect(chunks: AsyncIterator[bytes], receive: Receive, send: Send) -> None:
    """Send each chunk as it comes; stop waiting for more as soon as the client goes away."""
    async with anyio.create_task_group() as group:

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            group.cancel_scope.cancel()

        group.start_soon(watch)
        async for chunk in chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        group.cancel_scope.cancel()
