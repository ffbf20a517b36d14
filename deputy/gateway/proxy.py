"""The gateway endpoint ``/mcp/NAME``: authenticate, then forward MCP Streamable HTTP faithfully.

MCP transports, Streamable HTTP (2026-07-28): POST answered with JSON or an SSE
stream, the GET SSE stream, DELETE to end a session, ``Mcp-Session-Id`` and
``MCP-Protocol-Version`` — all passed through; response bodies are streamed
chunk by chunk, never buffered whole. What is *not* passed: the client's
``Authorization`` header and cookies (MCP: no token passthrough), hop-by-hop
headers (RFC 9110 §7.6.1), and upstream ``Set-Cookie``/``WWW-Authenticate``,
which would speak for Deputy's origin. Session ids are bound to the principal
(:mod:`deputy.gateway.sessions`).

This is a raw ASGI application: the hot path allocates no framework objects.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import anyio
import httpx
from starlette.types import Receive, Scope, Send

from deputy.config import UpstreamServer
from deputy.gateway.bearer import BearerAuthenticator, Refusal
from deputy.gateway.principal import Principal
from deputy.gateway.responses import jsonrpc_error, send_json
from deputy.gateway.sessions import SessionBinder
from deputy.gateway.upstreams import HttpUpstream

log = logging.getLogger(__name__)

PREFIX = "/mcp/"
MAX_REQUEST_BODY = 4 * 1024 * 1024
ALLOWED_METHODS = frozenset({"POST", "GET", "DELETE"})
SESSION_HEADER = b"mcp-session-id"
DROP_REQUEST_HEADERS = frozenset({
    b"host", b"authorization", b"cookie", b"content-length", b"connection", b"keep-alive",
    b"proxy-authorization", b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade",
    b"accept-encoding", b"dpop", SESSION_HEADER, b"forwarded", b"x-forwarded-for", b"x-forwarded-host",
    b"x-forwarded-proto",
})
DROP_RESPONSE_HEADERS = frozenset({
    b"connection", b"keep-alive", b"transfer-encoding", b"trailer", b"upgrade", b"set-cookie",
    b"www-authenticate", SESSION_HEADER, b"server", b"date", b"proxy-authenticate",
})
JSONRPC_INVALID_REQUEST = -32600
JSONRPC_INTERNAL_ERROR = -32603


class Gateway:
    def __init__(
        self,
        servers: Mapping[str, UpstreamServer],
        authenticator: BearerAuthenticator,
        upstreams: Mapping[str, HttpUpstream],
        http: httpx.AsyncClient,
        sessions: SessionBinder,
    ) -> None:
        self.servers = servers
        self.authenticator = authenticator
        self.upstreams = upstreams
        self.http = http
        self.sessions = sessions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        server = self.servers.get(scope["path"][len(PREFIX):])
        if server is None:
            await send_json(send, 404, {"error": "not_found", "error_description": "no such MCP server"})
            return
        method = scope["method"]
        if method not in ALLOWED_METHODS:
            await send_json(send, 405, jsonrpc_error(JSONRPC_INVALID_REQUEST, "method not allowed"),
                            [(b"allow", b"GET, POST, DELETE")])
            return
        authorization, session_id = None, None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == SESSION_HEADER:
                session_id = value.decode("latin-1")
        outcome = self.authenticator.authenticate(server, authorization, scope["query_string"])
        if isinstance(outcome, Refusal):
            await self._refuse(send, outcome)
            return
        upstream_session = None
        if session_id is not None:
            upstream_session = self.sessions.inward(outcome, session_id)
            if upstream_session is None:
                await send_json(send, 404, jsonrpc_error(JSONRPC_INVALID_REQUEST, "session not found"))
                return
        upstream = self.upstreams.get(server.name)
        if upstream is None:
            await send_json(send, 502, jsonrpc_error(JSONRPC_INTERNAL_ERROR, "upstream not available"))
            return
        body = await _read_body(receive)
        if body is None:
            await send_json(send, 413, jsonrpc_error(JSONRPC_INVALID_REQUEST, "request body too large"))
            return
        await self._forward(scope, receive, send, outcome, upstream, upstream_session, body)

    async def _refuse(self, send: Send, refusal: Refusal) -> None:
        headers = []
        if refusal.www_authenticate is not None:
            headers.append((b"www-authenticate", refusal.www_authenticate.encode()))
        body = {"error": refusal.error or "unauthorized", "error_description": refusal.description}
        await send_json(send, refusal.status, body, headers)

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        principal: Principal,
        upstream: HttpUpstream,
        upstream_session: str | None,
        body: bytes,
    ) -> None:
        headers = [(k, v) for k, v in scope["headers"] if k not in DROP_REQUEST_HEADERS]
        headers.append((b"accept-encoding", b"identity"))
        if upstream_session is not None:
            headers.append((SESSION_HEADER, upstream_session.encode("latin-1")))
        headers.extend((k.encode(), v.encode()) for k, v in upstream.headers)
        url = upstream.url
        if scope["query_string"]:
            url = f"{url}?{scope['query_string'].decode('latin-1')}"
        request = self.http.build_request(scope["method"], url, headers=headers, content=body)
        try:
            response = await self.http.send(request, stream=True)
        except httpx.HTTPError as exc:
            log.warning("upstream %s unreachable: %s", upstream.server.name, type(exc).__name__)
            await send_json(send, 502, jsonrpc_error(JSONRPC_INTERNAL_ERROR, "upstream server unreachable"))
            return
        try:
            if response.status_code in (401, 403):
                # The upstream refused Deputy's own credentials; that is not the client's to fix.
                log.warning("upstream %s refused Deputy's credentials (%d)", upstream.server.name,
                            response.status_code)
                await send_json(send, 502, jsonrpc_error(JSONRPC_INTERNAL_ERROR, "upstream refused the gateway"))
                return
            out = [(k, v) for k, v in response.headers.raw if k.lower() not in DROP_RESPONSE_HEADERS]
            upstream_id = response.headers.get("mcp-session-id")
            if upstream_id is not None:
                out.append((SESSION_HEADER, self.sessions.outward(principal, upstream_id).encode("latin-1")))
            await send({"type": "http.response.start", "status": response.status_code, "headers": out})
            if response.headers.get("content-type", "").startswith("text/event-stream"):
                await _stream_until_disconnect(response, receive, send)
            else:
                async for chunk in response.aiter_raw():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except httpx.HTTPError as exc:
            # Headers are out; all that is left is to end the stream early.
            log.warning("upstream %s stream broke: %s", upstream.server.name, type(exc).__name__)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_REQUEST_BODY:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def _stream_until_disconnect(response: httpx.Response, receive: Receive, send: Send) -> None:
    """Relay an SSE stream; stop reading upstream as soon as the client goes away."""
    async with anyio.create_task_group() as group:

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            group.cancel_scope.cancel()

        group.start_soon(watch)
        async for chunk in response.aiter_raw():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        group.cancel_scope.cancel()
