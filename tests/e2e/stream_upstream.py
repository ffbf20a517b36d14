"""An HTTP MCP upstream for the GET stream and call pool tests, served from a thread, that counts the streams and
calls it holds open.

- ``GET`` opens an SSE stream: a comment (so the client knows it is established), then nothing until the
  connection goes away; with ``?end=1`` it ends the stream itself after that comment. :attr:`open_streams` counts
  the streams whose connection is still up, as the upstream sees it: what a leaked upstream connection shows.
- ``POST`` answers JSON: ``initialize`` with a fresh ``Mcp-Session-Id``, anything else a one-line text result.
  :attr:`called` lists the name of every ``tools/call`` that arrived; while :attr:`holding` is set, a call to the
  tool ``hold`` is answered only once :meth:`release` is called (:attr:`held` counts those waiting).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from starlette.types import Receive, Scope, Send


class StreamUpstream:
    def __init__(self) -> None:
        self.open_streams = 0
        self.called: list[str] = []
        self.holding = False
        self.held = 0
        self._released: tuple[asyncio.AbstractEventLoop, asyncio.Event] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] == "GET":
            await self._stream(scope, receive, send)
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = json.loads(body) if body else {}
        if request.get("method") == "tools/call":
            await self._call(request["params"]["name"])
        headers = [(b"content-type", b"application/json")]
        if request.get("method") == "initialize":
            headers.append((b"mcp-session-id", secrets.token_hex(8).encode()))
            result: dict[str, object] = {"protocolVersion": "2025-06-18", "capabilities": {},
                                         "serverInfo": {"name": "streams", "version": "1"}}
        else:
            result = {"content": [{"type": "text", "text": "answered"}]}
        payload = json.dumps({"jsonrpc": "2.0", "id": request.get("id"), "result": result}).encode()
        await send({"type": "http.response.start", "status": 200 if "id" in request else 202, "headers": headers})
        await send({"type": "http.response.body", "body": payload})

    async def _call(self, name: str) -> None:
        self.called.append(name)
        if name != "hold" or not self.holding:
            return
        if self._released is None:
            self._released = asyncio.get_running_loop(), asyncio.Event()
        self.held += 1
        try:
            await self._released[1].wait()
        finally:
            self.held -= 1

    def release(self) -> None:
        """From the test's thread: every held call is answered, and none is held from now on."""
        self.holding = False
        if self._released is not None:
            loop, released = self._released
            loop.call_soon_threadsafe(released.set)

    async def _stream(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.open_streams += 1
        try:
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-store")]})
            await send({"type": "http.response.body", "body": b": open\n\n", "more_body": True})
            if b"end=1" not in scope["query_string"]:
                while (await receive())["type"] != "http.disconnect":
                    pass
            await send({"type": "http.response.body", "body": b""})
        finally:
            self.open_streams -= 1


class _ThreadServer(uvicorn.Server):
    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # not the main thread: the test runner keeps its own signal handlers


@contextmanager
def stream_upstream() -> Iterator[tuple[str, StreamUpstream]]:
    """The upstream's MCP URL and the app (for its counts), served until the block ends."""
    app = StreamUpstream()
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    port = int(listener.getsockname()[1])
    server = _ThreadServer(uvicorn.Config(app, lifespan="off", log_level="warning", timeout_graceful_shutdown=1))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[listener])), daemon=True)
    thread.start()
    try:
        for _ in range(1000):
            if server.started:
                break
            threading.Event().wait(0.01)
        assert server.started, "the stream upstream did not start"
        yield f"http://127.0.0.1:{port}/mcp", app
    finally:
        server.should_exit = True
        thread.join(10)
        listener.close()
