"""An e-mail address its provider has not verified never reaches a policy (OpenID Connect Core 1.0 §5.7).

At a provider where users set their own address, mallory sets ``cfo@corp.example`` and the provider says so with
``email_verified`` false. The server ``ledger`` permits its tool to ``context.user.email == "cfo@corp.example"``.
panva's ``oidc-provider`` (:mod:`tests.support.oidc_op`) is the provider; a real ``deputy serve`` (SQLite) its relying
party. Mallory signs in with the MCP SDK client: Deputy's token carries no ``email`` (it is minted from her stored
profile, so that holds none either), the call is denied and the decision's record shows policy saw ``""``. Carol,
whose provider verified the same address, is permitted the same call: the policy does decide by e-mail, so
mallory's denial is the fix's doing.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from mcp.shared.exceptions import MCPError

from tests.support.audit_log import read_log
from tests.support.corp_op import corp_openid_provider, corp_provider_toml, deputy_port
from tests.support.deputy_process import RunningDeputy, running_deputy
from tests.support.oidc_op import OpenIdProvider
from tests.support.sdk_client import sdk_oauth_client

__all__ = ["deputy_port"]  # the module-scope fixture, used by name below

POLICY_DENIED = -32003
CFO = "cfo@corp.example"
ACCOUNTS = {
    "mallory": {"password": "mallory-password", "email": CFO, "email_verified": False, "name": "Mallory",
                "groups": []},
    "carol": {"password": "carol-password", "email": CFO, "email_verified": True, "name": "Carol", "groups": []},
}
CFO_POLICIES = f'''
@id("browse")
permit (principal, action == Deputy::Action::"tools/list", resource);

@id("cfo-adds")
permit (principal, action == Deputy::Action::"add", resource) when {{ context.user.email == "{CFO}" }};
'''


@pytest.fixture(scope="module")
def op(deputy_port: int) -> Iterator[OpenIdProvider]:
    with corp_openid_provider(deputy_port, ACCOUNTS) as running:
        yield running


@pytest.fixture(scope="module")
def fed_deputy(op: OpenIdProvider, deputy_port: int, upstream_url: str,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDeputy]:
    directory = tmp_path_factory.mktemp("deputy-unverified-email")
    (directory / "cfo-policies").mkdir()
    (directory / "cfo-policies" / "cfo.cedar").write_text(CFO_POLICIES)
    extra = f'''
[servers.ledger]
url = "{upstream_url}"
scopes = ["ledger:tools"]
policies = "cfo-policies"
''' + corp_provider_toml(op, ["openid", "email", "profile"])
    with running_deputy(directory, f"sqlite+aiosqlite:///{directory / 'deputy.db'}", upstream_url, extra,
                        port=deputy_port) as running:
        yield running


async def token_claims(deputy: RunningDeputy, access_token: str) -> dict[str, object]:
    async with httpx.AsyncClient() as http:
        keys = KeySet.import_key_set((await http.get(f"{deputy.url}/.well-known/jwks.json")).json())
    return dict(jwt.decode(access_token, keys).claims)


async def test_an_unverified_email_is_not_in_the_token_and_does_not_pass_the_policy(
        fed_deputy: RunningDeputy) -> None:
    async with sdk_oauth_client(fed_deputy.resource("ledger"), "mallory", "mallory-password") as (client, run):
        with pytest.raises(MCPError) as denied:
            await client.call_tool("add", {"a": 40, "b": 2})
    assert denied.value.error.code == POLICY_DENIED
    assert run.storage.tokens is not None
    claims = await token_claims(fed_deputy, run.storage.tokens.access_token)
    assert "email" not in claims and CFO not in str(claims), claims
    assert claims["name"] == "Mallory"  # she is signed in, with the rest of her profile
    log = await read_log(fed_deputy.database_url)
    [decision] = [leaf.record for leaf in log.of_type("decision")
                  if leaf.record.get("tool") == "add" and leaf.record.get("user") == claims["sub"]]
    assert decision["outcome"] == "deny" and decision["user_attributes"]["email"] == ""


async def test_the_same_address_verified_passes_the_policy(fed_deputy: RunningDeputy) -> None:
    async with sdk_oauth_client(fed_deputy.resource("ledger"), "carol", "carol-password") as (client, run):
        result = await client.call_tool("add", {"a": 40, "b": 2})
    assert not result.is_error and result.structured_content == {"result": 42}
    assert run.storage.tokens is not None
    assert (await token_claims(fed_deputy, run.storage.tokens.access_token))["email"] == CFO
