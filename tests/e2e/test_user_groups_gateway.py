"""The user's groups decide her calls on the real path (issue 14, item 4), on both backends.

A server ``books`` (the demo upstream) is guarded by group rules: ``add`` is permitted to group ``finance``,
every tool call is forbidden to group ``engineering`` (its list still shows the tools, so a denial names the rule:
tests/security/test_hidden_tools.py). The people are federated users as a sign-in through an
identity provider leaves them — created and refreshed with :meth:`UserRepository.upsert_federated`, with a login
session started for them (:meth:`SessionRepository.start`), which is what the sign-in callback does once the ID
token is valid. Everything from there is Deputy's own and real: the authorization request, the consent page, the
token endpoint (code, refresh, token exchange), the gateway and the MCP Python SDK client. (The OpenID Provider
round trip itself is the sign-in's end-to-end test.)

Abuse first: nothing a client sends — token exchange parameters, an actor's token, a dynamic client's metadata —
puts groups in a token; a profile too large for a token gets none (never a cut list); a changed profile reaches
the next token (refresh), and the token already out keeps what was signed.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any, Final

import httpx
import httpx2
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from deputy.storage.db import Database
from deputy.storage.sessions import SessionRepository
from deputy.storage.users import UserRepository
from tests.support.delegation import (
    AGENT_A,
    JWT_TOKEN_TYPE,
    agent_own_token,
    claims_of,
    delegation_deputy,
    exchange_token,
)
from tests.support.deputy_process import RunningDeputy
from tests.support.oauth_flow import authorize, exchange, refresh, tokens_for_alice

POLICY_DENIED: Final = -32003
ISSUER: Final = "https://idp.example.com"
GROUP_POLICIES: Final = '''
@id("browse")
permit (principal, action == Deputy::Action::"tools/list", resource);

@id("finance-adds")
permit (principal, action == Deputy::Action::"add", resource) when { context.user.groups.contains("finance") };

@id("finance-deletes-on-approval")
@approval("required")
permit (principal, action == Deputy::Action::"delete_user", resource)
when { context.user.groups.contains("finance") };

@id("engineering-never")
forbid (principal, action in Deputy::Action::"tools/call", resource)
when { context.user.groups.contains("engineering") };
'''
OUTSIDE: Final = "https://outside.example.com"  # a [[trusted_issuers]] entry accepting subject tokens
OUTSIDE_KEY: Final = ECKey.generate_key("P-256", parameters={"kid": "outside-1"}, private=True)
SERVER: Final = f'''
[[trusted_issuers]]
issuer = "{OUTSIDE}"
jwks_file = "outside.jwks.json"
accept = ["subject_token"]

[servers.books]
url = "{{url}}"
scopes = ["books:tools"]
policies = "group-policies"
'''


@pytest.fixture(scope="module")
def groups_deputy(backend: str, upstream_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDeputy]:
    directory = tmp_path_factory.mktemp(f"deputy-groups-{backend}")
    (directory / "group-policies").mkdir()
    (directory / "group-policies" / "groups.cedar").write_text(GROUP_POLICIES)
    (directory / "outside.jwks.json").write_text(json.dumps({"keys": [OUTSIDE_KEY.as_dict(private=False)]}))
    with delegation_deputy(backend, upstream_url, directory, extra=SERVER.format(url=upstream_url)) as running:
        yield running


@asynccontextmanager
async def storage(deputy: RunningDeputy) -> AsyncIterator[Database]:
    database = Database(deputy.database_url)
    try:
        yield database
    finally:
        await database.dispose()


async def signs_in(deputy: RunningDeputy, label: str, groups: list[str]) -> str:
    """What a sign-in through the provider leaves: her profile as it states it now; her user id."""
    async with storage(deputy) as database:
        user = await UserRepository(database.engine).upsert_federated(
            "corp", ISSUER, f"sub-{label}", label, f"{label}@example.com", label.title(), groups, {})
    return user.user_id


@asynccontextmanager
async def browser_of(deputy: RunningDeputy, user_id: str) -> AsyncIterator[httpx.AsyncClient]:
    async with storage(deputy) as database:
        session = await SessionRepository(database.engine).start(user_id, 600)
    async with httpx.AsyncClient(timeout=30, cookies={"deputy_session": session}) as browser:
        yield browser


async def tokens_of(deputy: RunningDeputy, label: str, groups: list[str], client_id: str | None = None,
                    ) -> tuple[str, str]:
    user_id = await signs_in(deputy, label, groups)
    async with browser_of(deputy, user_id) as browser:
        extra: dict[str, Any] = {} if client_id is None else {"client_id": client_id}
        return await tokens_for_alice(deputy, deputy.resource("books"), browser=browser, **extra)


async def call_add(deputy: RunningDeputy, token: str) -> Any:
    """``add`` through the gateway with the MCP Python SDK client; its result, or the MCPError it raised."""
    return await call(deputy, token, "add", {"a": 40, "b": 2})


async def call(deputy: RunningDeputy, token: str, tool: str, arguments: dict[str, Any]) -> Any:
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30.0) as http,
        Client(streamable_http_client(deputy.resource("books"), http_client=http), mode="legacy") as client,
    ):
        try:
            result = await client.call_tool(tool, arguments)
        except MCPError as exc:
            return exc
        return result.structured_content if result.structured_content is not None else result


def denied_by(outcome: Any) -> list[str]:
    assert isinstance(outcome, MCPError), outcome
    assert outcome.error.code == POLICY_DENIED
    assert isinstance(outcome.error.data, dict)
    policies: list[str] = outcome.error.data["policies"]
    return policies


# --- abuse ----------------------------------------------------------------------------------------------------------

async def test_an_agent_acting_for_fay_sees_her_groups_whatever_it_sends(groups_deputy: RunningDeputy) -> None:
    deputy = groups_deputy
    fay, _ = await tokens_of(deputy, "fay", ["finance"])
    eve, _ = await tokens_of(deputy, "eve", ["engineering"])
    actor = await agent_own_token(deputy, AGENT_A, deputy.resource("books"))
    assert "groups" not in claims_of(actor)  # an agent acting for no one has no user
    injected = [("groups", "engineering admins"), ("email", "x@evil.example"),
                ("deputy_user", '{"idp": "local", "claims": {}}'), ("name", "Mallory")]
    for_fay = await exchange_token(deputy, AGENT_A, fay, actor, extra=injected)
    assert for_fay.status_code == 200, for_fay.text
    claims = claims_of(for_fay.json()["access_token"])
    assert claims["act"]["sub"] == AGENT_A and claims["sub"] == claims_of(fay)["sub"]
    assert (claims["groups"], claims["email"], claims["name"]) == (["finance"], "fay@example.com", "Fay")
    assert claims["deputy_user"] == {"idp": "corp", "claims": {}}
    assert await call_add(deputy, for_fay.json()["access_token"]) == {"result": 42}
    # For Eve the same agent is Eve's agent, with Eve's groups; with its own token it is no one's, and has none.
    for_eve = await exchange_token(deputy, AGENT_A, eve, actor)
    assert denied_by(await call_add(deputy, for_eve.json()["access_token"])) == ["engineering-never"]
    assert denied_by(await call_add(deputy, actor)) == []


async def test_groups_in_an_outside_subject_token_are_not_carried(groups_deputy: RunningDeputy) -> None:
    """A trusted issuer vouches for who its user is, not for her groups at Deputy: the exchanged token has none."""
    deputy = groups_deputy
    now = int(time.time())
    claims = {"iss": OUTSIDE, "sub": "ext-user", "aud": deputy.url, "iat": now, "exp": now + 120, "jti": f"o-{now}",
              "scope": "books:tools", "may_act": {"client_id": AGENT_A}, "groups": ["finance"],
              "email": "ext@example.com", "deputy_user": {"idp": "corp", "claims": {}}}
    subject = jwt.encode({"alg": "ES256", "typ": "JWT", "kid": OUTSIDE_KEY.kid}, claims, OUTSIDE_KEY,
                         algorithms=["ES256"])
    actor = await agent_own_token(deputy, AGENT_A, deputy.resource("books"))
    response = await exchange_token(deputy, AGENT_A, subject, actor, subject_token_type=JWT_TOKEN_TYPE,
                                    extra=[("resource", deputy.resource("books"))])
    assert response.status_code == 200, response.text
    exchanged = claims_of(response.json()["access_token"])
    assert exchanged["sub"] == "ext-user"
    assert not {"groups", "email", "name", "deputy_user"} & exchanged.keys()
    assert denied_by(await call_add(deputy, response.json()["access_token"])) == []


async def test_a_dynamic_clients_metadata_puts_no_groups_in_a_token(groups_deputy: RunningDeputy) -> None:
    deputy = groups_deputy
    registered = await register(deputy, {
        "client_name": "Greedy", "redirect_uris": [deputy.redirect_uri], "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"],
        "groups": ["finance"], "deputy_user": {"idp": "corp", "claims": {}}, "email": "x@evil.example"})
    access, _ = await tokens_of(deputy, "ivy", [], client_id=registered["client_id"])
    assert claims_of(access)["groups"] == [] and claims_of(access)["email"] == "ivy@example.com"
    assert denied_by(await call_add(deputy, access)) == []


async def test_a_profile_too_large_for_a_token_gets_none(groups_deputy: RunningDeputy) -> None:
    deputy = groups_deputy
    _, refresh_token = await tokens_of(deputy, "hal", ["finance"])
    user_id = await signs_in(deputy, "hal", [f"group-{i}" for i in range(300)])  # storable, too many for a token
    refused = await refresh(deputy, refresh_token)
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant", refused.text
    async with browser_of(deputy, user_id) as browser:
        auth = await authorize(deputy, resource=deputy.resource("books"), browser=browser)
    refused = await exchange(deputy, auth.code, verifier=auth.verifier or "", resource=deputy.resource("books"))
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant", refused.text
    assert "access_token" not in refused.json()


async def test_a_refresh_after_the_profile_changed_sees_the_new_groups(groups_deputy: RunningDeputy) -> None:
    deputy = groups_deputy
    access, refresh_token = await tokens_of(deputy, "gil", ["engineering"])
    assert denied_by(await call_add(deputy, access)) == ["engineering-never"]
    await signs_in(deputy, "gil", ["finance"])  # moved team; signed in again
    assert denied_by(await call_add(deputy, access)) == ["engineering-never"]  # the token out keeps what was signed
    refreshed = await refresh(deputy, refresh_token)
    assert refreshed.status_code == 200, refreshed.text
    assert claims_of(refreshed.json()["access_token"])["groups"] == ["finance"]
    assert await call_add(deputy, refreshed.json()["access_token"]) == {"result": 42}


async def test_an_approved_call_is_decided_again_with_the_groups_of_the_token_that_retries_it(
        groups_deputy: RunningDeputy) -> None:
    """The approval names the call, user and agent; the groups are the retrying token's (signed when issued)."""
    deputy = groups_deputy
    before, refresh_token = await tokens_of(deputy, "flo", ["finance"])
    arguments = {"id": 500, "reason": "left"}
    held = await call(deputy, before, "delete_user", arguments)
    assert isinstance(held, MCPError) and held.error.code == POLICY_DENIED, held
    assert isinstance(held.error.data, dict) and held.error.data["outcome"] == "approval_required"
    approved = deputy.cli("approvals", "approve", held.error.data["approval_id"], "--as", "alice")
    assert approved.returncode == 0, approved.stderr
    await signs_in(deputy, "flo", ["finance", "engineering"])  # joined engineering since
    after = await refresh(deputy, refresh_token)
    assert after.status_code == 200, after.text
    assert denied_by(await call(deputy, after.json()["access_token"], "delete_user", arguments)) == [
        "engineering-never"]
    # The approval was not used up by the forbidden retry: the token from before, finance only, proceeds.
    assert not isinstance(await call(deputy, before, "delete_user", arguments), MCPError)


# --- the rules decide --------------------------------------------------------------------------------------------

async def test_finance_is_permitted_and_engineering_denied(groups_deputy: RunningDeputy) -> None:
    deputy = groups_deputy
    fay, _ = await tokens_of(deputy, "fay", ["finance"])
    assert await call_add(deputy, fay) == {"result": 42}
    both, _ = await tokens_of(deputy, "bea", ["finance", "engineering"])
    denied = await call_add(deputy, both)
    assert denied_by(denied) == ["engineering-never"]
    # The decision's audit record keeps what policy saw of her; `deputy policy explain` shows it.
    explained = deputy.cli("policy", "explain", denied.error.data["decision_id"])
    assert explained.returncode == 0, explained.stderr
    assert "user as policy saw her" in explained.stdout and '"engineering", "finance"' in explained.stdout
    assert '"idp": "corp"' in explained.stdout and "bea@example.com" in explained.stdout


async def test_a_local_user_has_no_groups_and_her_attributes_still_type(groups_deputy: RunningDeputy) -> None:
    deputy = groups_deputy
    access, _ = await tokens_for_alice(deputy, deputy.resource("books"))
    claims = claims_of(access)
    assert (claims["groups"], claims["deputy_user"]["idp"], claims["name"]) == ([], "local", "alice")
    assert "email" not in claims
    assert denied_by(await call_add(deputy, access)) == []  # no permit: not in finance


async def register(deputy: RunningDeputy, body: dict[str, Any]) -> dict[str, Any]:
    """Dynamic client registration (RFC 7591 §3.1)."""
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(f"{deputy.url}/register", json=body)
    assert response.status_code == 201, response.text
    answer: dict[str, Any] = response.json()
    return answer

