"""With ``deputy serve --workers N``: a request for a stdio session reaches the worker that holds its process.

A stdio upstream's session is a child process of one worker (:mod:`deputy.gateway.stdio_upstream`), and its id says
which (``w<index>-…``, :func:`deputy.worker_identity.owner_of`). The kernel hands each connection on the shared
socket to any worker, so a request to ``/mcp/NAME`` (NAME a stdio server) whose ``Mcp-Session-Id`` names another
worker is passed, unchanged, to that worker over its private Unix socket, and the owner's answer is relayed back as
it comes: a JSON answer, an SSE stream (MCP Streamable HTTP, "Sending Messages to the Server"), the GET stream
("Listening for Messages from the Server"), a DELETE ("Session Management"). Everything else is served here: an
HTTP upstream's sessions are stateless (:mod:`deputy.gateway.sessions`), and so is everything outside ``/mcp/``.

What is checked, and where:

- **the owner decides.** Nothing is authenticated here: the owner runs every check on the request as it arrived —
  Host and Origin, the bearer token, the session id's HMAC tag binding it to the token's principal. A prefix edited
  by the client (``w1-`` on worker 0's session) sends the request to a worker that then fails the tag: 404, as any
  unknown session. A prefix naming no worker (``w99-``) is not routed at all and fails the tag here;
- **no loops.** A request that arrived over a worker's private socket is never passed on again. That origin is the
  socket the connection was accepted on (the ASGI scope's ``server`` is a Unix socket path, without a port), never a
  header a client could send;
- **fail closed.** An owner that cannot be reached (it is restarting, or gone) is answered 503 with a JSON-RPC error
  and ``Retry-After``; its sessions went with it, so the client is then told 404 by its successor and starts anew;
- **the same caps.** The body is read here with the gateway's own bound and deadline (:data:`MAX_REQUEST_BODY`,
  ``[limits] body_timeout``) before anything is sent on, so a worker never buffers more for another than for itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Collection

import aiohttp
from starlette.types import ASGIApp, Receive, Scope, Send
from yarl import URL

from deputy.gateway.request_reading import MAX_REQUEST_BODY, BodyRefused, RequestHeaders, read_body
from deputy.gateway.responses import (
    JSONRPC_INTERNAL_ERROR,
    JSONRPC_INVALID_REQUEST,
    end_body,
    jsonrpc_error,
    relay_until_disconnect,
    send_json,
)
from deputy.outbound_http import open_session
from deputy.worker_identity import WorkerIdentity, owner_of

log = logging.getLogger(__name__)

PREFIX = "/mcp/"
CONNECT_TIMEOUT = 5.0  # seconds to reach a worker's socket; the request itself may last as long as its stream
# Hop-by-hop fields (RFC 9110 §7.6.1) belong to one connection; content-length is re-stated for the body sent on,
# and the body is read whole before it is sent, so an Expect: 100-continue (RFC 9110 §10.1.1) has been met here.
HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding",
                        b"upgrade", b"content-length", b"expect"})
# The answer's own hop-by-hop fields, and the date this worker's HTTP server states itself.
ANSWER_DROPPED = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"date"})
# aiohttp adds these unless told not to: the owner must see the client's request as it was.
NO_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")
UNAVAILABLE = "the worker holding this session is unavailable; try again later"


class WorkerRouting:
    """An ASGI wrapper for ``/mcp/``: another worker's stdio sessions are passed to it, the rest served by ``app``."""

    def __init__(self, app: ASGIApp, identity: WorkerIdentity, stdio_servers: Collection[str],
                 body_timeout: float) -> None:
        self.app = app
        self.identity = identity
        self.stdio_servers = frozenset(stdio_servers)
        self.body_timeout = body_timeout
        self.own_socket = str(identity.socket_path(identity.index))
        self._sessions: dict[int, aiohttp.ClientSession] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        owner = self.owner(scope)
        if owner is None:
            await self.app(scope, receive, send)
        else:
            await self._forward(owner, scope, receive, send)

    def owner(self, scope: Scope) -> int | None:
        """The other worker this request belongs to; None when this worker serves it."""
        if scope["type"] != "http" or self.from_peer(scope):
            return None
        if scope["path"][len(PREFIX):] not in self.stdio_servers:
            return None
        session_id = RequestHeaders.read(scope["headers"]).session_id  # the one the gateway will read
        owner = owner_of(session_id) if session_id is not None else None
        return None if owner is None or owner == self.identity.index else owner

    def from_peer(self, scope: Scope) -> bool:
        """Whether the connection came in on this worker's private socket (a Unix socket: a path, no port)."""
        server = scope.get("server")
        return server is not None and server[1] is None and server[0] == self.own_socket

    async def close(self) -> None:
        for session in self._sessions.values():
            await session.close()
        self._sessions.clear()

    def _session(self, owner: int) -> aiohttp.ClientSession:
        session = self._sessions.get(owner)
        if session is None or session.closed:
            # A connection per request: a kept-alive one could be closed by the owner (its idle timeout, or its
            # connection guard making room) just as it is reused, and that race would be answered 503. Connecting to
            # a Unix socket costs microseconds.
            connector = aiohttp.UnixConnector(path=str(self.identity.socket_path(owner)), force_close=True)
            timeout = aiohttp.ClientTimeout(total=None, connect=CONNECT_TIMEOUT, sock_read=None)
            session = self._sessions[owner] = open_session(timeout, connector=connector,
                                                           skip_auto_headers=NO_AUTO_HEADERS)
        return session

    async def _forward(self, owner: int, scope: Scope, receive: Receive, send: Send) -> None:
        body = await self._body(scope, receive, send)
        if body is None:
            return
        headers = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in scope["headers"]
                   if name not in HOP_BY_HOP]
        target = scope.get("raw_path") or scope["path"].encode()
        query = scope["query_string"]
        url = URL(f"http://worker-{owner}{target.decode('latin-1')}" + (f"?{query.decode('latin-1')}" if query
                                                                         else ""), encoded=True)
        started = False
        try:
            async with self._session(owner).request(scope["method"], url, headers=headers, data=body,
                                                    allow_redirects=False) as answer:
                await send({"type": "http.response.start", "status": answer.status,
                            "headers": [(name, value) for name, value in answer.raw_headers
                                        if name.lower() not in ANSWER_DROPPED]})
                started = True
                try:
                    complete = await relay_until_disconnect(_chunks(answer), receive, send)
                except (TimeoutError, aiohttp.ClientError):
                    complete = False  # the owner went away mid-answer: the client keeps what came, and a clean end
                await end_body(send, complete=complete)
        except (TimeoutError, aiohttp.ClientConnectionError, OSError) as exc:
            if started:
                raise
            # Nothing was relayed yet: fail closed.
            log.warning("worker %d cannot reach worker %d for a stdio session (%s): answering 503",
                        self.identity.index, owner, type(exc).__name__)
            await send_json(send, 503, jsonrpc_error(JSONRPC_INTERNAL_ERROR, UNAVAILABLE), [(b"retry-after", b"1")])

    async def _body(self, scope: Scope, receive: Receive, send: Send) -> bytes | None:
        """The request body within the gateway's caps (deputy.gateway.proxy), or None once answered."""
        declared = RequestHeaders.read(scope["headers"]).declared_length
        body = (BodyRefused.TOO_LARGE if declared > 2 * MAX_REQUEST_BODY
                else await read_body(receive, asyncio.get_running_loop().time() + self.body_timeout))
        if not isinstance(body, BodyRefused):
            return body
        if body is not BodyRefused.GONE:
            await send_json(send, body.value[0], jsonrpc_error(JSONRPC_INVALID_REQUEST, body.value[1]),
                            [(b"connection", b"close")])
        return None


async def _chunks(answer: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """The owner's answer as it arrives (an SSE event is sent on as soon as it is read)."""
    async for chunk in answer.content.iter_any():
        yield chunk
