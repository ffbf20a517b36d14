"""Upstream MCP servers reached over HTTP, with pooled connections.

One ``httpx.AsyncClient`` serves every upstream, so connections are kept alive
and reused across calls (a new connection per call is what made peers slow,
see ``shared/reference/performance.md``). The client's credentials never reach
here: the only credentials sent upstream are the server's configured static
headers.
"""

from __future__ import annotations

from dataclasses import dataclass

import httpx

from deputy.config import UpstreamServer

# Read timeout: none, because an SSE stream may stay quiet for long; a client going away ends it.
TIMEOUT = httpx.Timeout(connect=10.0, read=None, write=30.0, pool=10.0)


@dataclass(frozen=True, slots=True)
class HttpUpstream:
    server: UpstreamServer
    url: str
    headers: tuple[tuple[str, str], ...]


def make_http_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(
        timeout=TIMEOUT,
        limits=httpx.Limits(max_connections=256, max_keepalive_connections=64, keepalive_expiry=60),
        follow_redirects=False,
        trust_env=False,
    )


def http_upstreams(servers: dict[str, UpstreamServer]) -> dict[str, HttpUpstream]:
    return {
        name: HttpUpstream(server, server.url, tuple(server.headers.items()))
        for name, server in servers.items()
        if server.url is not None
    }
