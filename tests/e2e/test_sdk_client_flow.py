"""The official MCP Python SDK client, starting from nothing but the server URL, gets through Deputy.

Discovery from the 401, dynamic registration, PKCE, login and consent over HTTP,
a token bound to the one server, and a tool call forwarded to the real upstream.
"""

from __future__ import annotations

from joserfc import jwt

from tests.support.deputy_process import PASSWORD, RunningDeputy
from tests.support.sdk_client import sdk_oauth_client


async def test_sdk_client_discovers_registers_authorizes_and_calls_add(deputy: RunningDeputy) -> None:
    resource = deputy.resource("demo")
    async with sdk_oauth_client(resource, "alice", PASSWORD) as (client, run):
        result = await client.call_tool("add", {"a": 2, "b": 40})
        assert not result.is_error
        assert result.structured_content == {"result": 42}
        echoed = await client.call_tool("echo", {"text": "through deputy"})
        assert "through deputy" in echoed.content[0].text  # type: ignore[union-attr]

    assert len(run.authorization_urls) == 1, "exactly one authorization round trip"
    redirect = run.redirects[0]
    assert redirect.iss == deputy.url  # RFC 9207
    token = run.storage.tokens
    assert token is not None and token.refresh_token
    claims = jwt.decode(token.access_token, _any_key(deputy)).claims
    assert claims["aud"] == resource
    assert claims["iss"] == deputy.url
    assert "demo:tools" in claims["scope"].split()


def _any_key(deputy: RunningDeputy):  # type: ignore[no-untyped-def]
    import httpx
    from joserfc.jwk import KeySet

    return KeySet.import_key_set(httpx.get(f"{deputy.url}/.well-known/jwks.json").json())


async def test_sdk_client_reaches_a_stdio_upstream_through_deputy(deputy: RunningDeputy) -> None:
    """A server configured with `command` runs as a process per session behind the same OAuth front."""
    async with sdk_oauth_client(deputy.resource("local"), "alice", PASSWORD) as (client, _run):
        tools = await client.list_tools()
        assert {"echo", "add", "list_users", "delete_user"} <= {t.name for t in tools.tools}
        result = await client.call_tool("add", {"a": 20, "b": 22})
        assert result.structured_content == {"result": 42}
        prompt = await client.get_prompt("greet", {"name": "Alice"})
        assert "Alice" in str(prompt.messages[0].content)
