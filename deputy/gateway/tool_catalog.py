"""What an upstream offers: its tools, as Deputy itself reads them over MCP (``tools/list``).

The policy schema has one typed action per tool (generated from each tool's
``inputSchema``), so Deputy needs every upstream's tool list before it can decide
anything — at start, and again when the upstream says the list changed. Deputy asks
as a client of its own: ``initialize``, then ``tools/list`` page by page (MCP
"Pagination": follow ``nextCursor``), over the server's transport (Streamable HTTP,
or a stdio process started for the purpose) and with the server's own upstream
credentials (:mod:`deputy.gateway.upstream_credentials`); under ``exchange`` the
token names the gateway itself as the subject, since no user asked. A ``credentials =
"oauth"`` server has no credential of Deputy's: the caller passes the headers of a user's
connection (:mod:`deputy.gateway.policy_lifecycle` says whose), and without them the list is
not asked for.

Bounded: at most :data:`MAX_PAGES` pages and :data:`MAX_TOOLS` tools, and
:data:`TIMEOUT` seconds for the whole conversation; a server that exceeds them, or
answers something that is not a tool list, is an error the caller must treat as
"nothing can be decided for this server" (fail closed).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import anyio
import httpx2

from deputy.config import UpstreamServer
from deputy.gateway.principal import Principal
from deputy.gateway.upstream_credentials import Headers, UpstreamCredentials, gateway_actor

if TYPE_CHECKING:
    from mcp.client import Client

log = logging.getLogger(__name__)

MAX_PAGES = 100
MAX_TOOLS = 10_000
TIMEOUT = 30.0


class CatalogUnavailable(Exception):
    """The upstream's tool list could not be read; the message says why."""


def gateway_principal(server: UpstreamServer, issuer: str) -> Principal:
    """Deputy asking on its own behalf (no user, no client): the subject of its upstream token."""
    gateway = gateway_actor(issuer, server).sub
    return Principal(user=gateway, agent=gateway, scopes=frozenset(server.scopes), token_id=f"catalog:{server.name}",
                     server=server.name, expires_at=2**62)


async def fetch_tools(server: UpstreamServer, credentials: UpstreamCredentials, issuer: str,
                      headers: Headers | None = None) -> list[dict[str, Any]]:
    """Every tool ``server`` lists, as the JSON objects of its ``tools/list`` results, in its order.

    ``headers``: a user's, for a server Deputy has no credential of its own for (``oauth``); else its own."""
    if headers is None and server.url is not None and server.credentials == "oauth":
        raise CatalogUnavailable(f"{server.name}: its tools are read with a user's connection; none was given")
    # The SDK's client (about 17 MB of imports) only when a catalog is read: a server without policies never reads one.
    from mcp.client import Client
    from mcp.client.stdio import StdioServerParameters
    from mcp.client.streamable_http import streamable_http_client

    try:
        with anyio.fail_after(TIMEOUT):
            if server.url is not None:
                sent = dict(credentials.headers(gateway_principal(server, issuer)) if headers is None else headers)
                async with (httpx2.AsyncClient(headers=sent, timeout=TIMEOUT, follow_redirects=False,
                                               trust_env=False) as http,
                            Client(streamable_http_client(server.url, http_client=http), mode="legacy") as client):
                    return await _all_tools(client)
            assert server.command is not None  # configuration guarantees url or command
            parameters = StdioServerParameters(command=server.command[0], args=list(server.command[1:]),
                                               env=dict(server.env))
            async with Client(parameters, mode="legacy") as client:
                return await _all_tools(client)
    except CatalogUnavailable:
        raise
    except TimeoutError:
        raise CatalogUnavailable(f"{server.name}: tools/list did not finish within {TIMEOUT:g} s") from None
    except Exception as exc:  # any failure of the conversation means the same: no catalog
        cause = _first_leaf(exc)
        log.warning("cannot read the tools of %s: %s: %s", server.name, type(cause).__name__, cause)
        raise CatalogUnavailable(f"{server.name}: tools/list failed ({type(cause).__name__}: {cause})") from None


def _first_leaf(exc: BaseException) -> BaseException:
    """The first real error inside task-group wrappers (what went wrong, not that a group failed)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


async def _all_tools(client: Client) -> list[dict[str, Any]]:
    tools: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(MAX_PAGES):
        page = await client.list_tools(cursor=cursor)
        tools.extend(tool.model_dump(mode="json", by_alias=True, exclude_none=True) for tool in page.tools)
        if len(tools) > MAX_TOOLS:
            raise CatalogUnavailable(f"more than {MAX_TOOLS} tools")
        cursor = page.next_cursor
        if not cursor:
            return tools
    raise CatalogUnavailable(f"tools/list still had more after {MAX_PAGES} pages")
