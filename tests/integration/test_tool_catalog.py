"""Deputy reads an upstream's tools itself (tools/list over MCP), over HTTP and stdio, or says it cannot."""

from __future__ import annotations

import sys

import pytest

from deputy.config import INHERITED_ENV, UpstreamServer
from deputy.gateway.tool_catalog import CatalogUnavailable, fetch_tools, gateway_principal
from deputy.gateway.upstream_credentials import NoCredentials
from tests.support.sdk_client import free_port

ISSUER = "http://127.0.0.1:9"
DEMO_TOOLS = ["echo", "add", "list_users", "delete_user"]


def server(name: str = "demo", **transport: object) -> UpstreamServer:
    return UpstreamServer(name=name, resource=f"{ISSUER}/mcp/{name}", title=name, scopes=("demo:tools",),
                          required_scopes=("demo:tools",), **transport)  # type: ignore[arg-type]


async def test_tools_of_an_http_upstream(upstream_url: str) -> None:
    tools = await fetch_tools(server(url=upstream_url), NoCredentials(), ISSUER)
    assert [tool["name"] for tool in tools] == DEMO_TOOLS
    delete_user = tools[-1]
    assert delete_user["inputSchema"]["properties"]["id"]["type"] == "integer"
    assert delete_user["inputSchema"]["required"] == ["id", "reason"]


async def test_tools_of_a_stdio_upstream() -> None:
    import os

    env = {var: os.environ[var] for var in INHERITED_ENV if var in os.environ}
    tools = await fetch_tools(server("local", command=(sys.executable, "-m", "deputy.demo", "--stdio"), env=env),
                              NoCredentials(), ISSUER)
    assert [tool["name"] for tool in tools] == DEMO_TOOLS


async def test_an_unreachable_upstream_is_reported_not_raised_raw() -> None:
    closed = f"http://127.0.0.1:{free_port()}/mcp"
    with pytest.raises(CatalogUnavailable, match="demo: tools/list failed"):
        await fetch_tools(server(url=closed), NoCredentials(), ISSUER)


async def test_a_stdio_command_that_is_not_an_mcp_server_is_reported() -> None:
    with pytest.raises(CatalogUnavailable, match="local"):
        await fetch_tools(server("local", command=(sys.executable, "-c", "print('hello')"), env={}),
                          NoCredentials(), ISSUER)


def test_the_gateway_asks_as_itself() -> None:
    principal = gateway_principal(server(url="http://up.example/mcp"), ISSUER)
    assert principal.user == principal.agent == f"{ISSUER}/mcp/demo"
    assert principal.actors == () and principal.scopes == frozenset({"demo:tools"})
