"""Agents with their own identity call a tool through Deputy (MCP `io.modelcontextprotocol/oauth-client-credentials`).

The official SDK's client credentials providers discover Deputy from the 401, authenticate
with a client secret or a `private_key_jwt` assertion (audience = the issuer), get a token
for the one server, and call the demo upstream; a raw JSON-RPC run checks the same by hand.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from mcp.client import Client
from mcp.client.auth import OAuthClientProvider
from mcp.client.auth.extensions.client_credentials import (
    ClientCredentialsOAuthProvider,
    PrivateKeyJWTOAuthProvider,
    SignedJWTParameters,
)
from mcp.client.streamable_http import streamable_http_client

from tests.support.agents import (
    JWT_AGENT,
    RSA_KEY,
    SECRET_AGENT,
    SECRET_AGENT_SECRET,
    agent_token,
    agents_deputy,
)
from tests.support.deputy_process import RunningDeputy
from tests.support.oauth_flow import mcp_post
from tests.support.sdk_client import InMemoryTokenStorage

PROTOCOL = {"MCP-Protocol-Version": "2025-06-18"}


@pytest.fixture(scope="module")
def agents(backend: str, upstream_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDeputy]:
    directory: Path = tmp_path_factory.mktemp(f"deputy-agents-e2e-{backend}")
    with agents_deputy(backend, upstream_url, directory) as running:
        yield running


async def _call_add(resource: str, provider: OAuthClientProvider) -> object:
    async with (
        httpx2.AsyncClient(auth=provider, timeout=30.0) as http,
        Client(streamable_http_client(resource, http_client=http), mode="legacy") as client,
    ):
        result = await client.call_tool("add", {"a": 40, "b": 2})
        assert not result.is_error
        return result.structured_content


async def test_sdk_client_credentials_with_a_secret(agents: RunningDeputy) -> None:
    storage = InMemoryTokenStorage()
    provider = ClientCredentialsOAuthProvider(server_url=agents.resource("demo"), storage=storage,
                                              client_id=SECRET_AGENT, client_secret=SECRET_AGENT_SECRET,
                                              issuer=agents.url)
    assert await _call_add(agents.resource("demo"), provider) == {"result": 42}
    assert storage.tokens is not None and storage.tokens.refresh_token is None


async def test_sdk_client_credentials_with_private_key_jwt(agents: RunningDeputy) -> None:
    signing = SignedJWTParameters(issuer=JWT_AGENT, subject=JWT_AGENT, signing_algorithm="RS256",
                                  signing_key=RSA_KEY.as_pem(private=True).decode())
    provider = PrivateKeyJWTOAuthProvider(server_url=agents.resource("demo"), storage=InMemoryTokenStorage(),
                                          client_id=JWT_AGENT, assertion_provider=signing.create_assertion_provider(),
                                          issuer=agents.url)
    assert await _call_add(agents.resource("demo"), provider) == {"result": 42}


async def test_raw_tool_call_with_a_client_credentials_token(agents: RunningDeputy) -> None:
    """initialize, notifications/initialized, tools/call — the gateway takes the agent as the principal."""
    token = await agent_token(agents)
    opened = await mcp_post(agents, token)
    assert opened.status_code == 200, opened.text
    session = opened.headers["mcp-session-id"]
    headers = {"Mcp-Session-Id": session, **PROTOCOL}
    initialized = await mcp_post(agents, token, headers=headers,
                                 body={"jsonrpc": "2.0", "method": "notifications/initialized"})
    assert initialized.status_code == 202
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "add", "arguments": {"a": 1, "b": 2}}}
    response = await mcp_post(agents, token, headers={**headers, "Accept": "application/json, text/event-stream"},
                              body=call)
    assert response.status_code == 200, response.text
    text = response.text
    messages = ([json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]
                if response.headers["content-type"].startswith("text/event-stream") else [response.json()])
    assert messages[-1]["result"]["structuredContent"] == {"result": 3}
    # The token is for /mcp/demo only (RFC 8707): another server refuses it.
    assert (await mcp_post(agents, token, server="other")).status_code == 401
