"""The demo MCP server behind a recorder, in a thread: what exactly reached the upstream?

`recording_upstream()` runs the demo server's ASGI app (stateless, JSON responses, no auth
of its own) on a loopback port and yields its URL and the `RequestRecorder`, which keeps
the method, headers and the body bytes of every HTTP request, exactly as received.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import uvicorn
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from deputy.demo.server import demo_asgi_app
from tests.support.sdk_client import free_port


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    chunks: list[bytes] = field(default_factory=list)

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)


class RequestRecorder:
    """An ASGI wrapper that notes every HTTP request (its body as the app reads it) before passing it on."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.seen: list[RecordedRequest] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        recorded = RecordedRequest(scope["method"], scope["path"],
                                   {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]})
        self.seen.append(recorded)

        async def recording_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                recorded.chunks.append(message.get("body", b""))
            return message

        await self.app(scope, recording_receive, send)


@contextmanager
def recording_upstream(app: ASGIApp | None = None) -> Iterator[tuple[str, RequestRecorder]]:
    """``app`` (default: the stateless demo upstream) on a free loopback port, in a thread, recording requests;
    yields (url, recorder)."""
    port = free_port()
    recorder = RequestRecorder(app if app is not None else demo_asgi_app(stateless=True, json_response=True))
    server = uvicorn.Server(uvicorn.Config(recorder, host="127.0.0.1", port=port, log_level="warning",
                                           http="h11", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("recording upstream did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/mcp", recorder
    finally:
        server.should_exit = True
        thread.join(10)
