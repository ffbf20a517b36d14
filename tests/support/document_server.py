"""An HTTPS server on 127.0.0.1 that serves whatever the test tells it to, in a thread of its own.

Each path answers with a configured status, body, headers and delay, so a test can serve a
good client metadata document, an oversized one, a slow one, a redirect, a wrong content
type. It runs uvicorn with the throwaway CA's server certificate (tests/support/tls.py).
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from tests.support.sdk_client import free_port
from tests.support.tls import TlsFiles


@dataclass
class Answer:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    chunked: bool = False  # streamed without Content-Length


class DocumentServer:
    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.port = port
        self.host = host
        self.answers: dict[str, Answer] = {}
        self.hits: dict[str, int] = {}

    def url(self, path: str, host: str | None = None) -> str:
        return f"https://{host or self.host}:{self.port}{path}"

    def serve(self, path: str, body: bytes | Mapping[str, Any], *, status: int = 200,
              content_type: str = "application/json", headers: Mapping[str, str] | None = None,
              delay: float = 0.0, chunked: bool = False) -> str:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.answers[path] = Answer(status, raw, {"Content-Type": content_type, **(headers or {})}, delay, chunked)
        return self.url(path)

    def serve_document(self, path: str, *, host: str | None = None, **fields: Any) -> str:
        """A valid client metadata document at ``path`` whose client_id is its own URL (override with fields)."""
        url = self.url(path, host)
        document = {"client_id": url, "client_name": "Test CIMD client",
                    "redirect_uris": ["http://localhost:9/callback"], **fields}
        self.serve(path, {k: v for k, v in document.items() if v is not None},
                   headers={"Cache-Control": "no-store"})
        return url

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        path = request.url.path
        self.hits[path] = self.hits.get(path, 0) + 1
        answer = self.answers.get(path)
        if answer is None:
            response = Response(b"not found", 404)
        else:
            if answer.delay:
                await asyncio.sleep(answer.delay)
            if answer.chunked:
                response = StreamingResponse(_pieces(answer.body), answer.status, headers=answer.headers)
            else:
                response = Response(answer.body, answer.status, headers=answer.headers)
        await response(scope, receive, send)


async def _pieces(body: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(body), 1024):
        yield body[start:start + 1024]


@contextmanager
def document_server(tls: TlsFiles) -> Iterator[DocumentServer]:
    server_app = DocumentServer(free_port())
    config = uvicorn.Config(server_app, host="127.0.0.1", port=server_app.port, ssl_certfile=str(tls.cert_file),
                            ssl_keyfile=str(tls.key_file), log_level="warning", lifespan="off",
                            timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test document server did not start")
        time.sleep(0.02)
    try:
        yield server_app
    finally:
        server.should_exit = True
        thread.join(10)
