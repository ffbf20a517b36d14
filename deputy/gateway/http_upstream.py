"""Upstream MCP servers reached over Streamable HTTP, with pooled connections.

One ``httpx.AsyncClient`` serves every HTTP upstream, so connections are kept
alive and reused across calls (a new connection per call is what made peers
slow, ``shared/reference/performance.md``). Forwarding is faithful: POST answered
with JSON or SSE, the GET stream, DELETE, ``MCP-Protocol-Version`` pass through,
bodies are relayed chunk by chunk. What is *not* passed: the client's
``Authorization`` and cookies (MCP "Token Passthrough" is forbidden), hop-by-hop
headers (RFC 9110 §7.6.1), and the upstream's ``Set-Cookie``/``WWW-Authenticate``,
which would speak for Deputy's origin. The only credentials sent are the
server's configured static headers.
"""

from __future__ import annotations

import logging

import httpx

from deputy.config import UpstreamServer
from deputy.gateway.exchange import Exchange
from deputy.gateway.responses import JSONRPC_INTERNAL_ERROR, jsonrpc_error, relay_until_disconnect, send_json

log = logging.getLogger(__name__)

# Read timeout: none, because an SSE stream may stay quiet for long; a client going away ends it.
TIMEOUT = httpx.Timeout(connect=10.0, read=None, write=30.0, pool=10.0)
SESSION_HEADER = b"mcp-session-id"
DROP_REQUEST_HEADERS = frozenset({
    b"host", b"authorization", b"cookie", b"content-length", b"connection", b"keep-alive",
    b"proxy-authorization", b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade",
    b"accept-encoding", b"dpop", SESSION_HEADER, b"forwarded", b"x-forwarded-for", b"x-forwarded-host",
    b"x-forwarded-proto", b"origin",
})
DROP_RESPONSE_HEADERS = frozenset({
    b"connection", b"keep-alive", b"transfer-encoding", b"trailer", b"upgrade", b"set-cookie",
    b"www-authenticate", SESSION_HEADER, b"server", b"date", b"proxy-authenticate",
})


def make_http_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=TIMEOUT,
        limits=httpx.Limits(max_connections=256, max_keepalive_connections=64, keepalive_expiry=60),
        follow_redirects=False,
        trust_env=False,
    )


class HttpUpstream:
    def __init__(self, server: UpstreamServer, http: httpx.AsyncClient) -> None:
        assert server.url is not None  # config validation guarantees url for HTTP upstreams
        self.server = server
        self.url = server.url
        self.http = http
        self.static_headers = [(k.lower().encode(), v.encode()) for k, v in server.headers.items()]

    async def close(self) -> None:
        return None  # the shared client is closed by its owner

    async def forward(self, exchange: Exchange) -> None:
        scope, send = exchange.scope, exchange.send
        # RFC 9110 §5.5: a field value excludes surrounding whitespace; h11 refuses to send it.
        headers = [(k, v.strip(b" \t")) for k, v in scope["headers"] if k not in DROP_REQUEST_HEADERS]
        headers.append((b"accept-encoding", b"identity"))
        if exchange.session is not None:
            headers.append((SESSION_HEADER, exchange.session.encode("latin-1")))
        headers.extend(self.static_headers)
        url = self.url
        if scope["query_string"]:
            url = f"{url}?{scope['query_string'].decode('latin-1')}"
        request = self.http.build_request(exchange.method, url, headers=headers, content=exchange.body)
        try:
            response = await self.http.send(request, stream=True)
        except httpx.HTTPError as exc:
            log.warning("upstream %s unreachable: %s", self.server.name, type(exc).__name__)
            await send_json(send, 502, jsonrpc_error(JSONRPC_INTERNAL_ERROR, "upstream server unreachable"))
            return
        try:
            if response.status_code in (401, 403):
                # The upstream refused Deputy's own credentials; that is not the client's to fix.
                log.warning("upstream %s refused the gateway (%d)", self.server.name, response.status_code)
                await send_json(send, 502, jsonrpc_error(JSONRPC_INTERNAL_ERROR, "upstream refused the gateway"))
                return
            out = [(k, v) for k, v in response.headers.raw if k.lower() not in DROP_RESPONSE_HEADERS]
            upstream_session = response.headers.get("mcp-session-id")
            if upstream_session is not None:
                out.append((SESSION_HEADER, exchange.bind_session(upstream_session).encode("latin-1")))
            await send({"type": "http.response.start", "status": response.status_code, "headers": out})
            if response.headers.get("content-type", "").startswith("text/event-stream"):
                await relay_until_disconnect(response.aiter_raw(), exchange.receive, send)
            else:
                async for chunk in response.aiter_raw():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except httpx.HTTPError as exc:
            # Headers are out; all that is left is to end the stream early.
            log.warning("upstream %s stream broke: %s", self.server.name, type(exc).__name__)
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await response.aclose()
