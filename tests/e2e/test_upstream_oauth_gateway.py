"""Calls through a running Deputy to an MCP server that takes only its own authorization server's tokens (issue 15).

Real parts only: ``deputy serve`` on both database backends, npm oidc-provider as the upstream's authorization
server and the official MCP SDK's server as the upstream (tests/support/upstream_oauth.py), the MCP SDK as the
client, and Deputy's own connect pages walked with httpx to connect. Abuse first: the client's token never reaches
the upstream, a client credentials token has no connection to use; then each way a client is sent to connect
(plain error, MCP 2026-07-28 ``input_required``, MCP 2025-11-25 ``URLElicitationRequiredError``), an agent acting
for Alice through her connection, step-up after the upstream's ``403 insufficient_scope``. A ``401`` answered by
one refresh and one retry is in tests/e2e/test_upstream_oauth_flow.py (the fixture's ``refuse()``), a policy
denial that sends nobody to connect in tests/e2e/test_upstream_oauth_policy.py.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin

import httpx
import httpx2
import pytest
from mcp.client import Client
from mcp.client.session import ClientRequestContext
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import ElicitRequestParams, ElicitRequestURLParams, ElicitResult, ErrorData

from tests.support.audit_log import read_log
from tests.support.databases import database_url
from tests.support.delegation import AGENT_A, agent_own_token, claims_of, delegation_config, exchange_token
from tests.support.deputy_process import PASSWORD, RunningDeputy, running_deputy
from tests.support.eventually import eventually
from tests.support.oauth_flow import tokens_for_alice
from tests.support.sdk_client import page_text, parse_form
from tests.support.upstream_oauth import ProtectedUpstream, UpstreamAuthServer, upstream_oauth

CONNECTION_REQUIRED = -32004
URL_ELICITATION_REQUIRED = -32042
# One user per test: a connection revoked by the CLI may still be used by the server for
# [gateway] revocation_max_staleness, so no test relies on another's disconnecting.
USERS = ("alice", "dora", "erin", "fred", "gina", "hank", "ivan")


def password(user: str) -> str:
    return PASSWORD if user == "alice" else f"{user}'s own long passphrase"
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
          "MCP-Protocol-Version": "2025-11-25"}


@dataclass(frozen=True)
class Stack:
    deputy: RunningDeputy
    auth: UpstreamAuthServer
    upstream: ProtectedUpstream

    @property
    def connect_url(self) -> str:
        return f"{self.deputy.url}/connect/ext"

    @property
    def mcp(self) -> str:
        return self.deputy.resource("ext")


@pytest.fixture(scope="module")
def oauth_parts() -> Iterator[tuple[UpstreamAuthServer, ProtectedUpstream]]:
    """The AS and the upstream, started once for both backends' Deputies: each Deputy registers a client of its own
    at the AS, and each test counts what the upstream saw from where it started."""
    with upstream_oauth(logins=USERS) as parts:
        yield parts


@pytest.fixture(scope="module")
def stack(backend: str, upstream_url: str, oauth_parts: tuple[UpstreamAuthServer, ProtectedUpstream],
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    directory = tmp_path_factory.mktemp(f"deputy-oauth-gateway-{backend}")
    auth, upstream = oauth_parts
    extra = delegation_config(extra=f'''
[servers.ext]
title = "Ext Tools"
url = "{upstream.url}"
credentials = "oauth"
scopes = ["ext:tools"]
[servers.ext.oauth]
trusted_hosts = ["127.0.0.1"]
''')
    with (database_url(backend, directory) as url,
          running_deputy(directory, url, upstream_url, extra,
                         users=tuple((user, password(user)) for user in USERS[1:])) as deputy):
        yield Stack(deputy, auth, upstream)


@asynccontextmanager
async def browser() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30, follow_redirects=False) as http:
        yield http


async def connect(stack: Stack, url: str, username: str = "alice") -> None:
    """What she does with the URL Deputy gave her client: sign in to Deputy there, press Connect, sign in and
    consent at the upstream's authorization server, come back."""
    async with browser() as http:
        page = await http.get(url)
        form = parse_form(page.text)
        signed_in = await http.post(urljoin(url, form.action),
                                    data={**form.fields, "username": username, "password": password(username)})
        assert signed_in.status_code == 303, page_text(signed_in.text)
        page = await http.get(url)
        form = parse_form(page.text)
        started = await http.post(urljoin(url, form.action), data=form.fields)
        assert started.status_code == 303 and started.headers["location"].startswith(stack.auth.issuer), started
        callback = await asyncio.to_thread(stack.auth.approve, started.headers["location"], username)
        assert callback.startswith(f"{stack.deputy.url}/connect/callback/ext?"), callback
        done = await http.get(callback)
        assert done.status_code == 303 and done.headers["location"] == "/connections", page_text(done.text)


async def post(stack: Stack, token: str, message: dict[str, Any]) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(stack.mcp, content=json.dumps(message),
                                   headers={**ACCEPT, "Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    assert "www-authenticate" not in response.headers
    answer: dict[str, Any] = response.json()
    return answer


def tool(name: str, request_id: int = 1, **arguments: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
            "params": {"name": name, "arguments": arguments}}


@pytest.fixture(scope="module")
async def alice(stack: Stack) -> str:
    return await token_of(stack, "alice")


async def token_of(stack: Stack, user: str) -> str:
    """Deputy's access token for ``user`` at the ext server (the client's, never sent upstream)."""
    token, _ = await tokens_for_alice(stack.deputy, stack.mcp, username=user, password=password(user))
    return token


def seen_by_upstream(stack: Stack) -> list[str]:
    return stack.upstream.seen_authorizations()


def upstream_subject(answer: dict[str, Any]) -> str:
    """The ``sub`` of the token the upstream saw, as its whoami tool says."""
    assert "result" in answer, answer
    text: str = answer["result"]["content"][0]["text"]
    return text


# -- abuse -----------------------------------------------------------------------------------------------------


async def test_nothing_reaches_the_upstream_until_she_connects_and_never_the_clients_token(stack: Stack) -> None:
    dora = await token_of(stack, "dora")
    before = len(seen_by_upstream(stack))
    answer = await post(stack, dora, tool("whoami"))
    assert answer["error"]["code"] == CONNECTION_REQUIRED, answer
    assert answer["error"]["data"] == {"server": "ext", "reason": "not_connected", "connect_url": stack.connect_url}
    assert "Connect your account at Ext Tools" in answer["error"]["message"]
    assert len(seen_by_upstream(stack)) == before
    await connect(stack, stack.connect_url, "dora")
    assert upstream_subject(await post(stack, dora, tool("whoami"))) == "dora"
    seen = seen_by_upstream(stack)[before:]
    assert seen and all(value.startswith("Bearer ") and dora not in value for value in seen)

    async def recorded() -> list[Mapping[str, Any]]:
        """Dora's two calls: each decided (allow) and recorded, the first not forwarded for want of a connection."""
        log = await read_log(stack.deputy.database_url)
        decisions = [leaf.record for leaf in log.decisions(jti=claims_of(dora)["jti"], tool="whoami")]
        outcomes = [leaf.record for d in decisions for leaf in log.outcomes_of(d["decision_id"])]
        assert [d["outcome"] for d in decisions] == ["allow", "allow"] and len(outcomes) == 2, (decisions, outcomes)
        return outcomes

    first, second = await eventually(recorded)
    assert (first["not_forwarded"], first["not_forwarded_reason"]) == ("connection_needed", "not_connected")
    assert "not_forwarded" not in second and second["status"] == 200
    texts = json.dumps([leaf.record for leaf in (await read_log(stack.deputy.database_url)).leaves])
    assert all(value.removeprefix("Bearer ") not in texts for value in seen)  # her upstream token: never


async def test_a_client_credentials_token_has_no_connection_to_use(stack: Stack) -> None:
    token = await agent_own_token(stack.deputy, AGENT_A, resource=stack.mcp)
    answer = await post(stack, token, tool("whoami"))
    assert answer["error"]["code"] == CONNECTION_REQUIRED, answer
    assert answer["error"]["data"] == {"server": "ext", "reason": "no_user"}


async def test_her_connection_is_hers_alone(stack: Stack) -> None:
    """Dora connected (above, or now): Ivan's calls are not sent with Dora's token."""
    await connect(stack, stack.connect_url, "dora")
    answer = await post(stack, await token_of(stack, "ivan"), tool("whoami"))
    assert answer["error"]["data"]["reason"] == "not_connected", answer


# -- the answers ------------------------------------------------------------------------------------------------


async def test_a_2026_client_is_sent_to_connect_and_its_retry_proceeds(stack: Stack) -> None:
    erin = await token_of(stack, "erin")
    shown: list[ElicitRequestURLParams] = []

    async def on_elicitation(context: ClientRequestContext, params: ElicitRequestParams) -> ElicitResult | ErrorData:
        assert isinstance(params, ElicitRequestURLParams), params
        shown.append(params)
        await connect(stack, params.url, "erin")  # she opens the URL and connects before the client retries
        return ElicitResult(action="accept")

    async with (httpx2.AsyncClient(headers={"Authorization": f"Bearer {erin}"}, timeout=30.0) as http,
                Client(streamable_http_client(stack.mcp, http_client=http), mode="2026-07-28",
                       elicitation_callback=on_elicitation) as client):
        result = await client.call_tool("whoami", {})
    assert result.content[0].text == "erin", result  # type: ignore[union-attr]
    assert [params.url for params in shown] == [stack.connect_url]
    assert "Connect your account at Ext Tools" in shown[0].message


async def test_a_2025_11_25_client_is_sent_to_step_up_by_url_elicitation_required(stack: Stack) -> None:
    """Connected when it initialized, the SDK client (initialize handshake, URL-mode elicitation declared) meets the
    upstream's 403 insufficient_scope: -32042 with the connect URL. This upstream keeps no sessions (stateless), so
    the declaration is remembered in a session of Deputy's own, which never reaches the upstream."""
    fred = await token_of(stack, "fred")

    async def never(context: ClientRequestContext, params: ElicitRequestParams) -> ElicitResult | ErrorData:
        raise AssertionError("no elicitation/create request is sent for a 2025-11-25 client")

    await connect(stack, stack.connect_url, "fred")
    with pytest.raises((MCPError, ExceptionGroup)) as raised:
        async with (httpx2.AsyncClient(headers={"Authorization": f"Bearer {fred}"}, timeout=30.0) as http,
                    Client(streamable_http_client(stack.mcp, http_client=http), mode="legacy",
                           elicitation_callback=never) as client):
            assert (await client.call_tool("whoami", {})).content[0].text == "fred"  # type: ignore[union-attr]
            await client.call_tool("admin_op", {})
    error = raised.value
    while isinstance(error, ExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    assert isinstance(error, MCPError), raised.value
    assert error.error.code == URL_ELICITATION_REQUIRED, error.error
    data = error.error.data
    assert isinstance(data, dict) and data["reason"] == "insufficient_scope", data
    assert data["connect_url"] == stack.connect_url
    [elicitation] = data["elicitations"]
    assert elicitation["mode"] == "url" and elicitation["url"] == stack.connect_url and elicitation["elicitationId"]
    assert "needs more access" in elicitation["message"]


# -- delegation, step-up ----------------------------------------------------------------------------------------


async def test_an_agent_acting_for_alice_uses_her_connection(stack: Stack, alice: str) -> None:
    exchanged = await exchange_token(stack.deputy, AGENT_A, alice,
                                     await agent_own_token(stack.deputy, AGENT_A, resource=stack.mcp))
    assert exchanged.status_code == 200, exchanged.text
    agent = exchanged.json()["access_token"]
    assert (await post(stack, agent, tool("whoami")))["error"]["data"]["reason"] == "not_connected"
    await connect(stack, stack.connect_url, "alice")
    assert upstream_subject(await post(stack, agent, tool("whoami"))) == "alice"
    assert upstream_subject(await post(stack, alice, tool("whoami"))) == "alice"


async def test_insufficient_scope_sends_her_to_grant_more(stack: Stack) -> None:
    gina = await token_of(stack, "gina")
    await connect(stack, stack.connect_url, "gina")
    before = len(seen_by_upstream(stack))
    answer = await post(stack, gina, tool("admin_op"))
    assert answer["error"]["code"] == CONNECTION_REQUIRED, answer
    assert answer["error"]["data"] == {"server": "ext", "reason": "insufficient_scope",
                                       "connect_url": stack.connect_url}
    assert len(seen_by_upstream(stack)) == before + 1  # refused unprocessed, and not retried: no refresh helps
    assert upstream_subject(await post(stack, gina, tool("whoami"))) == "gina"  # still connected for the rest


async def test_after_granting_more_the_call_proceeds(stack: Stack) -> None:
    hank = await token_of(stack, "hank")
    await connect(stack, stack.connect_url, "hank")
    assert (await post(stack, hank, tool("admin_op")))["error"]["data"]["reason"] == "insufficient_scope"
    await connect(stack, stack.connect_url, "hank")  # consents to the wider scope the upstream asked for
    answer = await post(stack, hank, tool("admin_op"))
    assert "result" in answer and not answer["result"].get("isError"), answer
