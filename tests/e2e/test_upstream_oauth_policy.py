"""Policies on a server Deputy calls with each user's own OAuth connection (issue 15, item 4: policy decides first).

Deputy has no credential of its own at such an upstream, so it cannot read the tools its policy schema is made of
until a user with a connection calls: the tools are read with *her* connection then, never at start. Real parts only:
``deputy serve`` on both database backends, npm oidc-provider as the upstream's authorization server and the official
MCP SDK's server as the upstream (tests/support/upstream_oauth.py), connections made through Deputy's own pages.

Each test has a Deputy of its own (the engine is built once per process). Abuse first: before anyone connected,
nothing reaches the upstream — not a call, not a list, not the catalog read — and she is sent to connect (a token
without a user is told it has no connection to use); then, once her connection built the engine, a forbidden call
is denied and audited and a permitted one runs, and a user with no connection calling a forbidden tool gets the
denial, never a connect prompt, while her permitted call sends her to connect.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.audit_log import read_log
from tests.support.databases import database_url
from tests.support.delegation import AGENT_A, agent_own_token, claims_of, delegation_config
from tests.support.deputy_process import PASSWORD, RunningDeputy, running_deputy
from tests.support.eventually import eventually
from tests.support.oauth_flow import tokens_for_alice
from tests.support.upstream_oauth import ProtectedUpstream, UpstreamAuthServer, connect_account, upstream_oauth

POLICY_DENIED = -32003
CONNECTION_REQUIRED = -32004
USERS = ("alice", "erin")
ACCEPT = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
          "MCP-Protocol-Version": "2025-11-25"}
POLICY = '''
@id("ext-tools")
permit (
  principal,
  action in [Deputy::Action::"tools/list", Deputy::Action::"whoami", Deputy::Action::"add"],
  resource
);

@id("ext-no-big-sums")
forbid (principal, action == Deputy::Action::"add", resource)
when { context.input.a > 100 };
'''


def password(user: str) -> str:
    return PASSWORD if user == "alice" else f"{user}'s own long passphrase"


@dataclass(frozen=True)
class Stack:
    deputy: RunningDeputy
    auth: UpstreamAuthServer
    upstream: ProtectedUpstream

    @property
    def mcp(self) -> str:
        return self.deputy.resource("ext")

    @property
    def connect_url(self) -> str:
        return f"{self.deputy.url}/connect/ext"

    def log_text(self) -> str:
        return (self.deputy.data_dir.parent / "deputy.log").read_text(errors="replace")


@pytest.fixture(scope="module")
def oauth_parts() -> Iterator[tuple[UpstreamAuthServer, ProtectedUpstream]]:
    with upstream_oauth(logins=USERS) as parts:
        yield parts


@pytest.fixture
def stack(backend: str, upstream_url: str, oauth_parts: tuple[UpstreamAuthServer, ProtectedUpstream],
          tmp_path: Path) -> Iterator[Stack]:
    auth, upstream = oauth_parts
    (tmp_path / "ext-policies").mkdir()
    (tmp_path / "ext-policies" / "ext.cedar").write_text(POLICY)
    extra = delegation_config(extra=f'''
[servers.ext]
title = "Ext Tools"
url = "{upstream.url}"
credentials = "oauth"
scopes = ["ext:tools"]
policies = "{tmp_path / 'ext-policies'}"
[servers.ext.oauth]
trusted_hosts = ["127.0.0.1"]
''')
    with (database_url(backend, tmp_path) as url,
          running_deputy(tmp_path, url, upstream_url, extra,
                         users=tuple((user, password(user)) for user in USERS[1:])) as deputy):
        yield Stack(deputy, auth, upstream)


async def token_of(stack: Stack, user: str) -> str:
    token, _ = await tokens_for_alice(stack.deputy, stack.mcp, username=user, password=password(user))
    return token


async def post(stack: Stack, token: str, message: dict[str, Any]) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=60) as http:
        response = await http.post(stack.mcp, content=json.dumps(message),
                                   headers={**ACCEPT, "Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def tool(name: str, request_id: int = 1, **arguments: Any) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
            "params": {"name": name, "arguments": arguments}}


def tools_list() -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 7, "method": "tools/list", "params": {}}


def assert_sent_to_connect(stack: Stack, answer: Mapping[str, Any]) -> None:
    assert answer["error"]["code"] == CONNECTION_REQUIRED, answer
    assert answer["error"]["data"] == {"server": "ext", "reason": "not_connected", "connect_url": stack.connect_url}


def assert_denied(answer: Mapping[str, Any]) -> None:
    error = answer["error"]
    assert error["code"] == POLICY_DENIED and error["data"]["policies"] == ["ext-no-big-sums"], answer
    assert "connect" not in json.dumps(error), answer  # a denial is a denial: nobody is sent to connect


# -- abuse -----------------------------------------------------------------------------------------------------


async def test_before_anyone_connects_nothing_reaches_the_upstream_and_she_is_sent_to_connect(stack: Stack) -> None:
    before = len(stack.upstream.seen_authorizations())
    alice = await token_of(stack, "alice")
    assert_sent_to_connect(stack, await post(stack, alice, tool("add", a=1, b=2)))
    assert_sent_to_connect(stack, await post(stack, alice, tool("add", a=500, b=2)))  # not decided: cannot be
    assert_sent_to_connect(stack, await post(stack, alice, tools_list()))
    agent = await agent_own_token(stack.deputy, AGENT_A, resource=stack.mcp)
    no_user = await post(stack, agent, tool("whoami"))
    assert no_user["error"]["code"] == CONNECTION_REQUIRED
    assert no_user["error"]["data"] == {"server": "ext", "reason": "no_user"}, no_user
    assert len(stack.upstream.seen_authorizations()) == before  # not even the tool list was asked for
    log = stack.log_text()
    assert "tools of ext are read at first use" in log
    assert "policies of ext active" not in log

    async def recorded() -> list[Mapping[str, Any]]:
        snapshot = await read_log(stack.deputy.database_url)
        decisions = [leaf.record for leaf in snapshot.decisions(jti=claims_of(alice)["jti"], tool="add")]
        assert len(decisions) == 2, decisions
        return decisions

    for decision in await eventually(recorded):  # the refusal is in the audit log, with why nothing was decided
        assert decision["outcome"] == "unavailable" and "not_connected" in decision["errors"][0], decision


async def test_once_her_connection_read_the_tools_policy_decides_for_everyone(stack: Stack) -> None:
    alice, erin = await token_of(stack, "alice"), await token_of(stack, "erin")
    await connect_account(stack.deputy.url, "ext", stack.auth, "alice", password("alice"))
    before = len(stack.upstream.seen_tokens())
    assert_denied(await post(stack, alice, tool("add", a=500, b=1)))
    catalog_read = stack.upstream.seen_tokens()[before:]
    assert catalog_read and all(stack.auth.claims_of(token)["sub"] == "alice" for token in catalog_read)
    assert "policies of ext active" in stack.log_text()

    permitted = await post(stack, alice, tool("add", a=2, b=3))
    assert permitted["result"]["content"][0]["text"] == "5", permitted

    # Erin has no connection; the engine is built, so her forbidden call is decided: denied, not a connect prompt.
    seen = len(stack.upstream.seen_tokens())
    assert_denied(await post(stack, erin, tool("add", a=101, b=0)))
    assert_sent_to_connect(stack, await post(stack, erin, tool("add", a=1, b=0)))  # permitted: now she must connect
    assert len(stack.upstream.seen_tokens()) == seen  # nothing of Erin's reached it, nor Alice's for her

    async def recorded() -> dict[str, list[str]]:
        snapshot = await read_log(stack.deputy.database_url)
        outcomes = {user: [leaf.record["outcome"] for leaf in snapshot.decisions(jti=claims_of(token)["jti"],
                                                                               tool="add")]
                    for user, token in (("alice", alice), ("erin", erin))}
        assert outcomes == {"alice": ["deny", "allow"], "erin": ["deny", "allow"]}, outcomes
        return outcomes

    await eventually(recorded)
    texts = json.dumps([leaf.record for leaf in (await read_log(stack.deputy.database_url)).leaves])
    assert all(token not in texts for token in stack.upstream.seen_tokens())  # her upstream token: never audited
