"""Token exchange (RFC 8693): agents acting for Alice, through a real Deputy on both backends.

Alice signs in through the public test client; her token's ``may_act`` names agent A, and
tokens A holds name agent B (``tests.support.delegation``). Agent K authenticates with
``private_key_jwt`` and may act for Alice too, proving itself with an assertion it signs
(RFC 8693 §2.1 ``actor_token``, RFC 7523 §3). Every refusal is checked for its status and
its OAuth ``error`` code; revocations reaching the gateway are bounded polls, never sleeps.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, Final

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey

from deputy.keys import KeyRing
from deputy.oauth.access_tokens import mint_access_token
from tests.security.helpers import assert_invalid_token, oauth_error, wait_for_status
from tests.support.agents import EC_KEY, OTHER_KEY, assertion, assertion_fields, post_form
from tests.support.delegation import (
    ACCESS_TOKEN_TYPE,
    AGENT_A,
    AGENT_B,
    AGENT_C,
    JWT_TOKEN_TYPE,
    TOKEN_EXCHANGE,
    agent_own_token,
    basic,
    claims_of,
    delegation_deputy,
    exchange_token,
)
from tests.support.deputy_process import PUBLIC_CLIENT, RunningDeputy
from tests.support.oauth_flow import OMIT, mcp_post, tokens_for_alice

KEYED_AGENT: Final = "agent-k"  # private_key_jwt; may act for Alice by a signed assertion
_KEYED_JWK: Final = ", ".join(f'{name} = "{value}"' for name, value in EC_KEY.as_dict(private=False).items())
KEYED_AGENT_CONFIG: Final = f'''
[[clients]]
client_id = "{KEYED_AGENT}"
client_name = "Agent K"
token_endpoint_auth_method = "private_key_jwt"
grant_types = ["client_credentials", "{TOKEN_EXCHANGE}"]
jwks = {{keys = [{{{_KEYED_JWK}}}]}}

[[delegation.may_act]]
client = "{PUBLIC_CLIENT}"
actors = ["{KEYED_AGENT}"]
'''
IDP: Final = "https://idp.example.com"  # an outside issuer trusted for subject tokens
IDP_KEY: Final = ECKey.generate_key("P-256", parameters={"kid": "idp-1"}, private=True)
IDP_CONFIG: Final = f'''
[[trusted_issuers]]
issuer = "{IDP}"
jwks_file = "idp.jwks.json"
accept = ["subject_token"]
'''
TOOLS_LIST: Final = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}


@pytest.fixture(scope="module")
def exchange_deputy(backend: str, upstream_url: str,
                    tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDeputy]:
    directory = tmp_path_factory.mktemp(f"deputy-exchange-{backend}")
    (directory / "idp.jwks.json").write_text(json.dumps({"keys": [IDP_KEY.as_dict(private=False)]}))
    with delegation_deputy(backend, upstream_url, directory, extra=KEYED_AGENT_CONFIG + IDP_CONFIG) as running:
        yield running


@pytest.fixture(scope="module")
def shallow_deputy(backend: str, upstream_url: str,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDeputy]:
    """The same agents, but a delegation chain may hold one actor only."""
    with delegation_deputy(backend, upstream_url, tmp_path_factory.mktemp(f"deputy-shallow-{backend}"),
                           max_depth=1) as running:
        yield running


@pytest.fixture(scope="module")
async def alice_browser(exchange_deputy: RunningDeputy) -> AsyncIterator[httpx.AsyncClient]:
    """Alice signs in once per Deputy; each test still runs its own authorization flow."""
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def keyring(exchange_deputy: RunningDeputy) -> KeyRing:
    return KeyRing.open(exchange_deputy.data_dir / "keys", 600)


async def alice_token(deputy: RunningDeputy, browser: httpx.AsyncClient, scope: str | None = None) -> str:
    access, _refresh = await tokens_for_alice(deputy, browser=browser, scope=scope if scope is not None else OMIT)
    return access


def exchanged(response: httpx.Response) -> str:
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


async def a_acts_for(deputy: RunningDeputy, subject_token: str, extra: Sequence[tuple[str, str]] = ()) -> str:
    """Agent A exchanges `subject_token`, proving itself with its own client credentials token."""
    actor = await agent_own_token(deputy, AGENT_A)
    return exchanged(await exchange_token(deputy, AGENT_A, subject_token, actor, extra=extra))


async def b_acts_for(deputy: RunningDeputy, subject_token: str, extra: Sequence[tuple[str, str]] = ()) -> str:
    actor = await agent_own_token(deputy, AGENT_B)
    return exchanged(await exchange_token(deputy, AGENT_B, subject_token, actor, extra=extra))


def assert_refused(response: httpx.Response, error: str, status: int = 400) -> None:
    assert response.status_code == status, response.text
    assert oauth_error(response) == error, response.text
    assert response.headers["cache-control"] == "no-store"
    assert "access_token" not in response.json()


async def introspect(deputy: RunningDeputy, token: str, agent: str) -> dict[str, Any]:
    response = await post_form(deputy, "/introspect", [("token", token)], basic=basic(agent))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def revoke_as_alice_client(deputy: RunningDeputy, token: str) -> None:
    """The public client revokes Alice's token (RFC 7009 §2.1; it identifies itself with client_id)."""
    response = await post_form(deputy, "/revoke", [("token", token), ("client_id", PUBLIC_CLIENT)])
    assert response.status_code == 200, response.text


async def tools_list(deputy: RunningDeputy, token: str) -> str:
    """initialize, then tools/list in that session, through the gateway with `token`; the raw answer."""
    initialized = await mcp_post(deputy, token)
    assert initialized.status_code == 200, initialized.text
    session = {"mcp-session-id": initialized.headers["mcp-session-id"], "mcp-protocol-version": "2025-06-18"}
    listed = await mcp_post(deputy, token, body=TOOLS_LIST, headers=session)
    assert listed.status_code == 200, listed.text
    return listed.text


async def withdraw(deputy: RunningDeputy, token: str, how: str) -> None:
    """End Alice's grant: her client revokes `token`, or the operator revokes her consent to that client."""
    if how == "revocation endpoint":
        await revoke_as_alice_client(deputy, token)
        return
    revoked = deputy.cli("consents", "revoke", "--user", "alice", "--client", PUBLIC_CLIENT, "--server", "demo")
    assert revoked.returncode == 0, revoked.stderr


def b64json(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode("ascii")


def act_of(*agents: str, issuer: str) -> dict[str, Any] | None:
    """The nested act claim Deputy writes for the chain `agents`, current actor first."""
    claim: dict[str, Any] | None = None
    for agent in reversed(agents):
        outer: dict[str, Any] = {"sub": agent, "client_id": agent, "iss": issuer}
        if claim is not None:
            outer["act"] = claim
        claim = outer
    return claim


# --- the happy path ----------------------------------------------------------------------------


async def test_a_acts_for_alice_then_b_acts_for_a(exchange_deputy: RunningDeputy,
                                                  alice_browser: httpx.AsyncClient) -> None:
    """RFC 8693 §2.2.1, §4.1: A's token is Alice's (sub) with act = A; B's re-exchange nests A under B."""
    deputy = exchange_deputy
    alice = await alice_token(deputy, alice_browser)
    alice_claims = claims_of(alice)
    assert alice_claims["may_act"] == {"client_id": sorted([AGENT_A, KEYED_AGENT, PUBLIC_CLIENT])}
    actor = await agent_own_token(deputy, AGENT_A)

    response = await exchange_token(deputy, AGENT_A, alice, actor)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["issued_token_type"] == ACCESS_TOKEN_TYPE
    assert body["token_type"] == "Bearer"
    assert "refresh_token" not in body
    by_a = body["access_token"]
    claims = claims_of(by_a)
    assert claims["iss"] == deputy.url
    assert claims["sub"] == alice_claims["sub"]
    assert claims["client_id"] == AGENT_A
    assert claims["act"] == {"sub": AGENT_A, "client_id": AGENT_A, "iss": deputy.url}
    assert "act" not in claims["act"]
    assert claims["aud"] == deputy.resource("demo")
    assert set(claims["scope"].split()) <= set(alice_claims["scope"].split())
    assert claims["scope"] == body["scope"]
    assert claims["exp"] <= alice_claims["exp"]
    assert claims["exp"] <= claims["iat"] + 300
    assert body["expires_in"] == claims["exp"] - claims["iat"]
    assert claims["sid"] != alice_claims["sid"]
    txn = claims["txn"]
    assert isinstance(txn, str) and txn
    assert claims["may_act"] == {"client_id": AGENT_B}  # tokens A holds may be used by B

    by_b = await b_acts_for(deputy, by_a)
    b_claims = claims_of(by_b)
    assert b_claims["sub"] == alice_claims["sub"]
    assert b_claims["client_id"] == AGENT_B
    assert b_claims["act"] == act_of(AGENT_B, AGENT_A, issuer=deputy.url)
    assert b_claims["txn"] == txn
    assert b_claims["aud"] == deputy.resource("demo")
    assert b_claims["exp"] <= claims["exp"]
    assert "may_act" not in b_claims  # no rule lets anyone act for what B holds

    for token in (by_a, by_b):
        assert "echo" in await tools_list(deputy, token)
        assert_invalid_token(deputy, await mcp_post(deputy, token, server="other"), server="other")


async def test_exchange_by_audience_name_is_for_that_server(exchange_deputy: RunningDeputy,
                                                            alice_browser: httpx.AsyncClient) -> None:
    """RFC 8693 §2.1: ``audience`` may name the server (by name or URL) the subject token is already for."""
    alice = await alice_token(exchange_deputy, alice_browser)
    for audience in ("demo", exchange_deputy.resource("demo")):
        token = await a_acts_for(exchange_deputy, alice, extra=[("audience", audience),
                                                                ("resource", exchange_deputy.resource("demo"))])
        assert claims_of(token)["aud"] == exchange_deputy.resource("demo")


async def test_exchanged_token_never_outlives_its_actor_token(exchange_deputy: RunningDeputy,
                                                              alice_browser: httpx.AsyncClient,
                                                              keyring: KeyRing) -> None:
    """RFC 8693 §2.1: the issued token ends no later than the actor token it was granted on."""
    alice = await alice_token(exchange_deputy, alice_browser)
    actor, actor_claims = mint_access_token(
        keyring, issuer=exchange_deputy.url, subject=AGENT_A, client_id=AGENT_A,
        audience=exchange_deputy.resource("demo"), scope="demo:tools", ttl=60, grant_id=None, auth_time=None)
    token = exchanged(await exchange_token(exchange_deputy, AGENT_A, alice, actor))
    assert claims_of(token)["exp"] <= actor_claims["exp"]


async def test_assertion_signed_by_the_agent_is_an_actor_token(exchange_deputy: RunningDeputy,
                                                               alice_browser: httpx.AsyncClient) -> None:
    """RFC 8693 §2.1 / RFC 7523 §3: an assertion the authenticated client signed proves the actor."""
    alice = await alice_token(exchange_deputy, alice_browser)
    response = await exchange_token(
        exchange_deputy, None, alice, assertion(exchange_deputy, KEYED_AGENT), actor_token_type=JWT_TOKEN_TYPE,
        extra=assertion_fields(assertion(exchange_deputy, KEYED_AGENT)))
    claims = claims_of(exchanged(response))
    assert claims["client_id"] == KEYED_AGENT
    assert claims["act"] == {"sub": KEYED_AGENT, "client_id": KEYED_AGENT, "iss": exchange_deputy.url}


@pytest.mark.parametrize("case", ["replayed jti", "another key", "expired"])
async def test_bad_actor_assertion_is_invalid_grant(exchange_deputy: RunningDeputy,
                                                    alice_browser: httpx.AsyncClient, case: str) -> None:
    """RFC 8693 §2.2.2 / RFC 6749 §5.2: a bad actor_token is invalid_grant; the client itself authenticated."""
    alice = await alice_token(exchange_deputy, alice_browser)
    if case == "replayed jti":
        actor = assertion(exchange_deputy, KEYED_AGENT)
        first = await exchange_token(exchange_deputy, None, alice, actor, actor_token_type=JWT_TOKEN_TYPE,
                                     extra=assertion_fields(assertion(exchange_deputy, KEYED_AGENT)))
        assert first.status_code == 200, first.text
    elif case == "another key":
        actor = assertion(exchange_deputy, KEYED_AGENT, key=OTHER_KEY)
    else:
        actor = assertion(exchange_deputy, KEYED_AGENT, iat=int(time.time()) - 120, lifetime=-60)
    response = await exchange_token(exchange_deputy, None, alice, actor, actor_token_type=JWT_TOKEN_TYPE,
                                    extra=assertion_fields(assertion(exchange_deputy, KEYED_AGENT)))
    assert_refused(response, "invalid_grant")


async def test_self_signed_actor_assertion_from_a_client_without_keys_is_invalid_grant(
        exchange_deputy: RunningDeputy, alice_browser: httpx.AsyncClient) -> None:
    """A (client_secret_basic, no registered keys) cannot prove itself by signing an assertion."""
    alice = await alice_token(exchange_deputy, alice_browser)
    forged = assertion(exchange_deputy, AGENT_A, key=OTHER_KEY)
    response = await exchange_token(exchange_deputy, AGENT_A, alice, forged, actor_token_type=JWT_TOKEN_TYPE)
    assert_refused(response, "invalid_grant")


# --- narrowing only: scope and audience --------------------------------------------------------


async def test_wider_scope_is_invalid_scope(exchange_deputy: RunningDeputy, alice_browser: httpx.AsyncClient) -> None:
    """RFC 8693 §2.1 / §5: an exchange never widens; Alice has no demo:admin → invalid_scope."""
    alice = await alice_token(exchange_deputy, alice_browser)
    assert "demo:admin" not in claims_of(alice)["scope"].split()
    actor = await agent_own_token(exchange_deputy, AGENT_A, scope="demo:tools demo:admin")
    for scope in ("demo:admin", "demo:tools demo:admin", "other:tools"):
        response = await exchange_token(exchange_deputy, AGENT_A, alice, actor, extra=[("scope", scope)])
        assert_refused(response, "invalid_scope")


async def test_scope_is_also_limited_by_the_actor_token(exchange_deputy: RunningDeputy,
                                                        alice_browser: httpx.AsyncClient) -> None:
    """The issued scope is subject ∩ actor ∩ request: Alice's demo:admin is dropped when A's token lacks it."""
    alice = await alice_token(exchange_deputy, alice_browser, scope="demo:tools demo:admin")
    assert set(claims_of(alice)["scope"].split()) == {"demo:tools", "demo:admin"}
    token = await a_acts_for(exchange_deputy, alice)  # A's own token: demo:tools only
    assert claims_of(token)["scope"] == "demo:tools"
    wide_actor = await agent_own_token(exchange_deputy, AGENT_A, scope="demo:tools demo:admin")
    refused = await exchange_token(exchange_deputy, AGENT_A, alice, await agent_own_token(exchange_deputy, AGENT_A),
                                   extra=[("scope", "demo:admin")])
    assert_refused(refused, "invalid_scope")
    both = exchanged(await exchange_token(exchange_deputy, AGENT_A, alice, wide_actor))
    assert set(claims_of(both)["scope"].split()) == {"demo:tools", "demo:admin"}


@pytest.mark.parametrize("parameter", ["resource", "audience"])
async def test_another_server_is_invalid_target(exchange_deputy: RunningDeputy, alice_browser: httpx.AsyncClient,
                                                parameter: str) -> None:
    """RFC 8693 §2.2.2 / RFC 8707: Alice's token for /mcp/demo cannot become a token for /mcp/other."""
    alice = await alice_token(exchange_deputy, alice_browser)
    actor = await agent_own_token(exchange_deputy, AGENT_A)
    for value in (exchange_deputy.resource("other"), "other", "https://elsewhere.example/mcp"):
        if parameter == "resource" and value == "other":
            continue  # resource must be an absolute URI; the server's name is only an audience
        response = await exchange_token(exchange_deputy, AGENT_A, alice, actor, extra=[(parameter, value)])
        assert_refused(response, "invalid_target")


@pytest.mark.parametrize("parameter", ["resource", "audience"])
@pytest.mark.parametrize("value", ["http://[", "http://127.0.0.1:port/mcp/demo", "/mcp/demo", "demo#x", "FRAGMENT"])
async def test_malformed_target_is_invalid_target(exchange_deputy: RunningDeputy, alice_browser: httpx.AsyncClient,
                                                  parameter: str, value: str) -> None:
    """RFC 8707 §2: a target that is not an absolute URI without a fragment is invalid_target (never a 500)."""
    alice = await alice_token(exchange_deputy, alice_browser)
    if value == "FRAGMENT":
        value = exchange_deputy.resource("demo") + "#fragment"
    response = await exchange_token(exchange_deputy, AGENT_A, alice, await agent_own_token(exchange_deputy, AGENT_A),
                                    extra=[(parameter, value)])
    assert_refused(response, "invalid_target")


@pytest.mark.parametrize("parameter", ["resource", "audience"])
async def test_second_audience_is_invalid_target(exchange_deputy: RunningDeputy, alice_browser: httpx.AsyncClient,
                                                 parameter: str) -> None:
    """RFC 8693 §2.1 allows several targets; a Deputy token is for exactly one → invalid_target."""
    alice = await alice_token(exchange_deputy, alice_browser)
    actor = await agent_own_token(exchange_deputy, AGENT_A)
    demo, other = exchange_deputy.resource("demo"), exchange_deputy.resource("other")
    for values in ((demo, other), (demo, demo)):
        response = await exchange_token(exchange_deputy, AGENT_A, alice, actor,
                                        extra=[(parameter, value) for value in values])
        assert_refused(response, "invalid_target")


async def test_audience_naming_another_server_than_resource_is_invalid_target(
        exchange_deputy: RunningDeputy, alice_browser: httpx.AsyncClient) -> None:
    """``resource`` and ``audience`` together must name one server, the subject token's."""
    alice = await alice_token(exchange_deputy, alice_browser)
    actor = await agent_own_token(exchange_deputy, AGENT_A)
    demo, other = exchange_deputy.resource("demo"), exchange_deputy.resource("other")
    for resource, audience in ((demo, other), (demo, "other"), (other, demo)):
        response = await exchange_token(exchange_deputy, AGENT_A, alice, actor,
                                        extra=[("resource", resource), ("audience", audience)])
        assert_refused(response, "invalid_target")


# --- who may act ----------------------------------------------------------------------------------


async def test_actor_not_named_by_may_act_is_invalid_grant(exchange_deputy: RunningDeputy,
                                                          alice_browser: httpx.AsyncClient) -> None:
    """RFC 8693 §4.4: Alice's token's may_act does not name C, so C cannot act for her."""
    alice = await alice_token(exchange_deputy, alice_browser)
    assert AGENT_C not in claims_of(alice)["may_act"]["client_id"]
    response = await exchange_token(exchange_deputy, AGENT_C, alice, await agent_own_token(exchange_deputy, AGENT_C))
    assert_refused(response, "invalid_grant")


async def test_b_cannot_skip_a_and_act_for_alice_directly(exchange_deputy: RunningDeputy,
                                                          alice_browser: httpx.AsyncClient) -> None:
    """B may act only for tokens A holds; Alice's own token does not name B."""
    alice = await alice_token(exchange_deputy, alice_browser)
    response = await exchange_token(exchange_deputy, AGENT_B, alice, await agent_own_token(exchange_deputy, AGENT_B))
    assert_refused(response, "invalid_grant")


async def test_a_cannot_act_again_on_its_own_delegated_token(exchange_deputy: RunningDeputy,
                                                             alice_browser: httpx.AsyncClient) -> None:
    """A's delegated token names B in may_act, not A: A cannot stack itself twice into the chain."""
    by_a = await a_acts_for(exchange_deputy, await alice_token(exchange_deputy, alice_browser))
    response = await exchange_token(exchange_deputy, AGENT_A, by_a, await agent_own_token(exchange_deputy, AGENT_A))
    assert_refused(response, "invalid_grant")


async def test_chain_longer_than_max_depth_is_invalid_request(shallow_deputy: RunningDeputy) -> None:
    """``delegation.max_depth = 1``: A may act for Alice, B's re-exchange would make two actors."""
    async with httpx.AsyncClient(timeout=30) as browser:
        alice = await alice_token(shallow_deputy, browser)
    by_a = await a_acts_for(shallow_deputy, alice)
    assert claims_of(by_a)["act"] == act_of(AGENT_A, issuer=shallow_deputy.url)
    response = await exchange_token(shallow_deputy, AGENT_B, by_a, await agent_own_token(shallow_deputy, AGENT_B))
    assert_refused(response, "invalid_request")  # the same re-exchange succeeds with max_depth = 4 (above)


async def test_actor_token_of_another_client_is_invalid_grant(exchange_deputy: RunningDeputy,
                                                              alice_browser: httpx.AsyncClient) -> None:
    """The actor is always the authenticated client: A cannot present B's token as its actor token."""
    alice = await alice_token(exchange_deputy, alice_browser)
    response = await exchange_token(exchange_deputy, AGENT_A, alice, await agent_own_token(exchange_deputy, AGENT_B))
    assert_refused(response, "invalid_grant")


async def test_delegated_token_is_not_an_actor_token(exchange_deputy: RunningDeputy,
                                                     alice_browser: httpx.AsyncClient, keyring: KeyRing) -> None:
    """An actor token is the client's own (sub = client_id, no act); a token A holds for Alice does not prove A."""
    alice = await alice_token(exchange_deputy, alice_browser)
    by_a = await a_acts_for(exchange_deputy, alice)
    response = await exchange_token(exchange_deputy, AGENT_A, alice, by_a)
    assert_refused(response, "invalid_grant")
    # Nor is Alice's own token, whose sub is Alice.
    response = await exchange_token(exchange_deputy, AGENT_A, alice, alice)
    assert_refused(response, "invalid_grant")
    # Nor a token about A that someone else acted on (a "*" rule could make one): it carries an act chain.
    acted_on, _claims = mint_access_token(
        keyring, issuer=exchange_deputy.url, subject=AGENT_A, client_id=AGENT_A,
        audience=exchange_deputy.resource("demo"), scope="demo:tools", ttl=120, grant_id=None, auth_time=None,
        act={"sub": AGENT_B, "client_id": AGENT_B, "iss": exchange_deputy.url})
    response = await exchange_token(exchange_deputy, AGENT_A, alice, acted_on)
    assert_refused(response, "invalid_grant")


async def test_revoked_actor_token_is_invalid_grant(exchange_deputy: RunningDeputy,
                                                    alice_browser: httpx.AsyncClient) -> None:
    alice = await alice_token(exchange_deputy, alice_browser)
    actor = await agent_own_token(exchange_deputy, AGENT_A)
    revoked = await post_form(exchange_deputy, "/revoke", [("token", actor)], basic=basic(AGENT_A))
    assert revoked.status_code == 200, revoked.text
    assert_refused(await exchange_token(exchange_deputy, AGENT_A, alice, actor), "invalid_grant")


# --- no actor token: only the holder, and the chain is kept -------------------------------------


async def test_holder_narrowing_its_delegated_token_keeps_the_chain(exchange_deputy: RunningDeputy,
                                                                    alice_browser: httpx.AsyncClient) -> None:
    """Without actor_token, A narrows a token it holds: act, sub, txn are kept exactly; scope narrows."""
    alice = await alice_token(exchange_deputy, alice_browser, scope="demo:tools demo:admin")
    wide_actor = await agent_own_token(exchange_deputy, AGENT_A, scope="demo:tools demo:admin")
    by_b = await b_acts_for(exchange_deputy, exchanged(
        await exchange_token(exchange_deputy, AGENT_A, alice, wide_actor)))
    by_a = exchanged(await exchange_token(exchange_deputy, AGENT_A, alice, wide_actor))
    before = claims_of(by_a)
    assert set(before["scope"].split()) == {"demo:tools", "demo:admin"}

    response = await exchange_token(exchange_deputy, AGENT_A, by_a, extra=[("scope", "demo:tools")])
    narrowed = claims_of(exchanged(response))
    assert narrowed["act"] == before["act"] == act_of(AGENT_A, issuer=exchange_deputy.url)
    assert narrowed["sub"] == before["sub"]
    assert narrowed["client_id"] == AGENT_A
    assert narrowed["txn"] == before["txn"]
    assert narrowed["scope"] == "demo:tools"
    assert narrowed["exp"] <= before["exp"]

    # B narrowing what it holds keeps both actors.
    b_before = claims_of(by_b)
    b_narrowed = claims_of(exchanged(await exchange_token(exchange_deputy, AGENT_B, by_b)))
    assert b_narrowed["act"] == b_before["act"] == act_of(AGENT_B, AGENT_A, issuer=exchange_deputy.url)
    # Widening again is refused, even by the holder.
    widened = await exchange_token(exchange_deputy, AGENT_A, exchanged(response),
                                   extra=[("scope", "demo:tools demo:admin")])
    assert_refused(widened, "invalid_scope")


async def test_another_client_without_actor_token_is_refused(exchange_deputy: RunningDeputy,
                                                             alice_browser: httpx.AsyncClient) -> None:
    """Without actor_token the exchange would drop the new actor: only the token's own client may do it.

    B (or C) holding A's delegated token, or A holding Alice's, cannot turn it into a token of its own
    without naming itself as actor."""
    alice = await alice_token(exchange_deputy, alice_browser)
    by_a = await a_acts_for(exchange_deputy, alice)
    for agent, subject in ((AGENT_B, by_a), (AGENT_C, by_a), (AGENT_A, alice), (AGENT_B, alice)):
        response = await exchange_token(exchange_deputy, agent, subject)
        assert_refused(response, "invalid_request")


# --- the requester ----------------------------------------------------------------------------


async def test_unauthenticated_exchange_is_invalid_client(exchange_deputy: RunningDeputy,
                                                          alice_browser: httpx.AsyncClient) -> None:
    """RFC 8693 §2.1 / OAuth 2.1 §3.2.4: no client authentication → 401 invalid_client."""
    alice = await alice_token(exchange_deputy, alice_browser)
    response = await exchange_token(exchange_deputy, None, alice, await agent_own_token(exchange_deputy, AGENT_A))
    assert_refused(response, "invalid_client", 401)
    no_secret = await exchange_token(exchange_deputy, None, alice, extra=[("client_id", AGENT_A)])
    assert_refused(no_secret, "invalid_client", 401)


async def test_public_client_cannot_exchange(exchange_deputy: RunningDeputy,
                                             alice_browser: httpx.AsyncClient) -> None:
    """A public client proves nothing about itself: it may not exchange, not even its own token."""
    alice = await alice_token(exchange_deputy, alice_browser)
    response = await exchange_token(exchange_deputy, None, alice, extra=[("client_id", PUBLIC_CLIENT)])
    assert_refused(response, "unauthorized_client")


# --- malformed requests ------------------------------------------------------------------------


async def test_actor_token_without_its_type_is_invalid_request(exchange_deputy: RunningDeputy,
                                                               alice_browser: httpx.AsyncClient) -> None:
    """RFC 8693 §2.1: actor_token_type is REQUIRED when actor_token is present (and the reverse)."""
    alice = await alice_token(exchange_deputy, alice_browser)
    actor = await agent_own_token(exchange_deputy, AGENT_A)
    response = await exchange_token(exchange_deputy, AGENT_A, alice, actor, actor_token_type=None)
    assert_refused(response, "invalid_request")
    only_type = await exchange_token(exchange_deputy, AGENT_A, alice, extra=[("actor_token_type", ACCESS_TOKEN_TYPE)])
    assert_refused(only_type, "invalid_request")
    unknown_type = await exchange_token(exchange_deputy, AGENT_A, alice, actor,
                                        actor_token_type="urn:ietf:params:oauth:token-type:saml2")
    assert_refused(unknown_type, "invalid_request")


@pytest.mark.parametrize("requested", [
    "urn:ietf:params:oauth:token-type:refresh_token",
    "urn:ietf:params:oauth:token-type:id_token",
    "urn:ietf:params:oauth:token-type:saml2",
    "",
])
async def test_unsupported_requested_token_type_is_invalid_request(
        exchange_deputy: RunningDeputy, alice_browser: httpx.AsyncClient, requested: str) -> None:
    alice = await alice_token(exchange_deputy, alice_browser)
    response = await exchange_token(exchange_deputy, AGENT_A, alice, await agent_own_token(exchange_deputy, AGENT_A),
                                    extra=[("requested_token_type", requested)])
    assert_refused(response, "invalid_request")


async def test_subject_token_parameters_are_required(exchange_deputy: RunningDeputy,
                                                     alice_browser: httpx.AsyncClient) -> None:
    """RFC 8693 §2.1: subject_token and subject_token_type are REQUIRED; the type must be one Deputy reads."""
    alice = await alice_token(exchange_deputy, alice_browser)
    actor = await agent_own_token(exchange_deputy, AGENT_A)
    for subject, subject_type in ((None, None), (alice, None),
                                  (alice, "urn:ietf:params:oauth:token-type:id_token")):
        response = await exchange_token(exchange_deputy, AGENT_A, subject, actor, subject_token_type=subject_type)
        assert_refused(response, "invalid_request")


async def test_garbage_subject_token_is_invalid_grant(exchange_deputy: RunningDeputy,
                                                      alice_browser: httpx.AsyncClient) -> None:
    """A subject token Deputy cannot verify (not a JWT, a refresh token, a truncated JWT) → invalid_grant."""
    alice, refresh_token = await tokens_for_alice(exchange_deputy, browser=alice_browser)
    actor = await agent_own_token(exchange_deputy, AGENT_A)
    head, payload, signature = alice.split(".")
    for garbage in ("not-a-token", refresh_token, f"{head}.{payload}.", f"{head}.{payload}.{signature[:-4]}AAAA",
                    "a.b.c"):
        response = await exchange_token(exchange_deputy, AGENT_A, garbage, actor)
        assert_refused(response, "invalid_grant")


@pytest.mark.parametrize("signature", ["", "AAAA"])
async def test_alg_none_subject_token_is_invalid_grant(exchange_deputy: RunningDeputy,
                                                       alice_browser: httpx.AsyncClient, signature: str) -> None:
    """RFC 8725 §3.1: Alice's real claims under ``alg: none`` are not a subject token."""
    alice = await alice_token(exchange_deputy, alice_browser)
    unsigned = f"{b64json({'alg': 'none', 'typ': 'at+jwt'})}.{alice.split('.')[1]}.{signature}"
    response = await exchange_token(exchange_deputy, AGENT_A, unsigned, await agent_own_token(exchange_deputy, AGENT_A))
    assert_refused(response, "invalid_grant")


async def test_expired_subject_token_is_invalid_grant(exchange_deputy: RunningDeputy, keyring: KeyRing) -> None:
    """A subject token past its exp (beyond the clock leeway) cannot be exchanged; the same one unexpired can."""
    def subject_token(expires_at: int) -> str:
        token, _claims = mint_access_token(
            keyring, issuer=exchange_deputy.url, subject="alice-minted", client_id=PUBLIC_CLIENT,
            audience=exchange_deputy.resource("demo"), scope="demo:tools", ttl=600, grant_id=None,
            auth_time=int(time.time()) - 30, expires_at=expires_at, may_act={"client_id": AGENT_A})
        return token

    actor = await agent_own_token(exchange_deputy, AGENT_A)
    control = await exchange_token(exchange_deputy, AGENT_A, subject_token(int(time.time()) + 120), actor)
    assert claims_of(exchanged(control))["sub"] == "alice-minted"
    response = await exchange_token(exchange_deputy, AGENT_A, subject_token(int(time.time()) - 60), actor)
    assert_refused(response, "invalid_grant")


@pytest.mark.parametrize("how", ["revocation endpoint", "consents revoke"])
async def test_revoked_subject_token_is_invalid_grant(exchange_deputy: RunningDeputy,
                                                      alice_browser: httpx.AsyncClient, how: str) -> None:
    alice = await alice_token(exchange_deputy, alice_browser)
    await withdraw(exchange_deputy, alice, how)
    response = await exchange_token(exchange_deputy, AGENT_A, alice, await agent_own_token(exchange_deputy, AGENT_A))
    assert_refused(response, "invalid_grant")


# --- revocation cascades down, not up ----------------------------------------------------------


@pytest.mark.parametrize("how", ["revocation endpoint", "consents revoke"])
async def test_revoking_alice_grant_revokes_every_token_exchanged_from_it(
        exchange_deputy: RunningDeputy, alice_browser: httpx.AsyncClient, how: str) -> None:
    """Withdrawing Alice's grant ends A's token and B's token derived from it (gateway and introspection)."""
    deputy = exchange_deputy
    alice = await alice_token(deputy, alice_browser)
    by_a = await a_acts_for(deputy, alice)
    by_b = await b_acts_for(deputy, by_a)
    for token in (by_a, by_b):
        assert (await mcp_post(deputy, token)).status_code == 200
    assert (await introspect(deputy, by_a, AGENT_A))["active"] is True
    assert (await introspect(deputy, by_b, AGENT_B))["active"] is True

    await withdraw(deputy, alice, how)

    for token in (alice, by_a, by_b):
        refused = await wait_for_status(lambda t=token: mcp_post(deputy, t), 401)  # type: ignore[misc]
        assert_invalid_token(deputy, refused)
    assert await introspect(deputy, by_a, AGENT_A) == {"active": False}
    assert await introspect(deputy, by_b, AGENT_B) == {"active": False}
    # Nor can what remains be exchanged again.
    again = await exchange_token(deputy, AGENT_B, by_a, await agent_own_token(deputy, AGENT_B))
    assert_refused(again, "invalid_grant")


async def test_revoking_an_exchanged_token_leaves_alice_token_alone(
        exchange_deputy: RunningDeputy, alice_browser: httpx.AsyncClient) -> None:
    """A revoking its token ends it and what B derived from it, never Alice's own token."""
    deputy = exchange_deputy
    alice = await alice_token(deputy, alice_browser)
    by_a = await a_acts_for(deputy, alice)
    by_b = await b_acts_for(deputy, by_a)
    revoked = await post_form(deputy, "/revoke", [("token", by_a)], basic=basic(AGENT_A))
    assert revoked.status_code == 200, revoked.text
    for token in (by_a, by_b):
        refused = await wait_for_status(lambda t=token: mcp_post(deputy, t), 401)  # type: ignore[misc]
        assert_invalid_token(deputy, refused)
    assert (await mcp_post(deputy, alice)).status_code == 200
    assert (await a_acts_for(deputy, alice)) != by_a  # Alice's grant still lets A act for her


async def test_only_the_holder_may_revoke_an_exchanged_token(exchange_deputy: RunningDeputy,
                                                             alice_browser: httpx.AsyncClient) -> None:
    """RFC 7009 §2.1: B cannot revoke the token A holds (it was issued to A)."""
    by_a = await a_acts_for(exchange_deputy, await alice_token(exchange_deputy, alice_browser))
    response = await post_form(exchange_deputy, "/revoke", [("token", by_a)], basic=basic(AGENT_B))
    assert response.status_code == 400
    assert (await mcp_post(exchange_deputy, by_a)).status_code == 200


# --- txn ----------------------------------------------------------------------------------------


async def test_requested_txn_is_carried_along_the_chain(exchange_deputy: RunningDeputy,
                                                        alice_browser: httpx.AsyncClient) -> None:
    alice = await alice_token(exchange_deputy, alice_browser)
    txn = "task:2024-07/report~v1.2+a=b"
    by_a = await a_acts_for(exchange_deputy, alice, extra=[("txn", txn)])
    assert claims_of(by_a)["txn"] == txn
    by_b = await b_acts_for(exchange_deputy, by_a, extra=[("txn", txn)])  # the same task, stated again
    assert claims_of(by_b)["txn"] == txn


async def test_each_new_task_gets_its_own_txn(exchange_deputy: RunningDeputy,
                                              alice_browser: httpx.AsyncClient) -> None:
    alice = await alice_token(exchange_deputy, alice_browser)
    first, second = await a_acts_for(exchange_deputy, alice), await a_acts_for(exchange_deputy, alice)
    assert claims_of(first)["txn"] != claims_of(second)["txn"]


@pytest.mark.parametrize("txn", ["", "has space", "x" * 129, "naïve", "semi;colon", "line\nbreak"])
async def test_malformed_txn_is_invalid_request(exchange_deputy: RunningDeputy,
                                                alice_browser: httpx.AsyncClient, txn: str) -> None:
    alice = await alice_token(exchange_deputy, alice_browser)
    response = await exchange_token(exchange_deputy, AGENT_A, alice, await agent_own_token(exchange_deputy, AGENT_A),
                                    extra=[("txn", txn)])
    assert_refused(response, "invalid_request")


async def test_txn_different_from_the_subject_token_is_invalid_request(
        exchange_deputy: RunningDeputy, alice_browser: httpx.AsyncClient) -> None:
    """A token belongs to one task: re-exchanging it cannot move it to another txn."""
    by_a = await a_acts_for(exchange_deputy, await alice_token(exchange_deputy, alice_browser),
                            extra=[("txn", "task-one")])
    response = await exchange_token(exchange_deputy, AGENT_B, by_a, await agent_own_token(exchange_deputy, AGENT_B),
                                    extra=[("txn", "task-two")])
    assert_refused(response, "invalid_request")
    narrowing = await exchange_token(exchange_deputy, AGENT_A, by_a, extra=[("txn", "task-two")])
    assert_refused(narrowing, "invalid_request")


# --- introspection ------------------------------------------------------------------------------


async def test_introspection_by_the_holder_describes_the_delegation(exchange_deputy: RunningDeputy,
                                                                    alice_browser: httpx.AsyncClient) -> None:
    """RFC 7662 §2.2 / RFC 8693 §4: the holder learns act, may_act and txn; anyone else learns nothing."""
    deputy = exchange_deputy
    alice = await alice_token(deputy, alice_browser)
    by_a = await a_acts_for(deputy, alice, extra=[("txn", "introspected-task")])
    body = await introspect(deputy, by_a, AGENT_A)
    claims = claims_of(by_a)
    assert body["active"] is True
    assert body["sub"] == claims_of(alice)["sub"]
    assert body["client_id"] == AGENT_A
    assert body["aud"] == deputy.resource("demo")
    assert body["act"] == act_of(AGENT_A, issuer=deputy.url)
    assert body["may_act"] == {"client_id": AGENT_B}
    assert body["txn"] == "introspected-task"
    assert body["exp"] == claims["exp"]
    assert body["scope"] == claims["scope"]

    by_b = await b_acts_for(deputy, by_a)
    b_body = await introspect(deputy, by_b, AGENT_B)
    assert b_body["active"] is True
    assert b_body["act"] == act_of(AGENT_B, AGENT_A, issuer=deputy.url)
    assert b_body["txn"] == "introspected-task"
    assert "may_act" not in b_body

    for agent in (AGENT_B, AGENT_C):
        assert await introspect(deputy, by_a, agent) == {"active": False}
    assert await introspect(deputy, by_b, AGENT_A) == {"active": False}


# --- subject tokens from a trusted outside issuer ------------------------------------------------


def idp_token(deputy: RunningDeputy, *, key: ECKey = IDP_KEY, alg: str = "ES256", **claims: Any) -> str:
    """A JWT from the trusted IdP about ``ext-user``, issued to the public test client; `claims` override."""
    now = int(time.time())
    body: dict[str, Any] = {"iss": IDP, "sub": "ext-user", "aud": deputy.url, "client_id": PUBLIC_CLIENT,
                            "scope": "demo:tools", "iat": now, "exp": now + 120, "jti": f"idp-{now}"}
    body.update(claims)
    body = {name: value for name, value in body.items() if value is not None}
    return jwt.encode({"alg": alg, "typ": "JWT", "kid": key.kid}, body, key, algorithms=[alg])


async def test_trusted_issuer_subject_token_is_exchanged(exchange_deputy: RunningDeputy) -> None:
    """RFC 8693 §2.1: a JWT from a ``[[trusted_issuers]]`` entry accepting subject_token; who may act is the
    token's own may_act, the lifetime never passes its exp, the server must be named."""
    deputy = exchange_deputy
    subject = idp_token(deputy, may_act={"client_id": AGENT_A})
    actor = await agent_own_token(deputy, AGENT_A)
    resource = [("resource", deputy.resource("demo"))]
    response = await exchange_token(deputy, AGENT_A, subject, actor, subject_token_type=JWT_TOKEN_TYPE,
                                    extra=resource)
    claims = claims_of(exchanged(response))
    assert claims["sub"] == "ext-user"
    assert claims["act"] == act_of(AGENT_A, issuer=deputy.url)
    assert claims["aud"] == deputy.resource("demo")
    assert claims["exp"] <= claims_of(subject)["exp"]
    assert claims["scope"] == "demo:tools"
    assert "auth_time" not in claims  # nobody signed in at Deputy
    assert (await mcp_post(deputy, exchanged(response))).status_code == 200

    unnamed = await exchange_token(deputy, AGENT_A, subject, actor, subject_token_type=JWT_TOKEN_TYPE)
    assert_refused(unnamed, "invalid_request")
    not_admitted = await exchange_token(deputy, AGENT_C, subject, await agent_own_token(deputy, AGENT_C),
                                        subject_token_type=JWT_TOKEN_TYPE, extra=resource)
    assert_refused(not_admitted, "invalid_grant")
    wider = await exchange_token(deputy, AGENT_A, subject, actor, subject_token_type=JWT_TOKEN_TYPE,
                                 extra=[*resource, ("scope", "demo:admin")])
    assert_refused(wider, "invalid_scope")


async def test_outside_client_ids_do_not_select_deputys_rules(exchange_deputy: RunningDeputy) -> None:
    """The IdP's token says it was issued to "test-public": that is the IdP's client, not Deputy's, so the
    [[delegation.may_act]] rule for Deputy's test-public (agent-a may act) does not apply to it — and the
    holder-may-narrow path without an actor is closed to outside tokens."""
    deputy = exchange_deputy
    subject = idp_token(deputy)  # client_id = test-public, no may_act
    actor = await agent_own_token(deputy, AGENT_A)
    resource = [("resource", deputy.resource("demo"))]
    refused = await exchange_token(deputy, AGENT_A, subject, actor, subject_token_type=JWT_TOKEN_TYPE,
                                   extra=resource)
    assert_refused(refused, "invalid_grant")
    assert "may_act" in refused.json()["error_description"]
    posing_holder = idp_token(deputy, client_id=AGENT_A)
    refused = await exchange_token(deputy, AGENT_A, posing_holder, None, subject_token_type=JWT_TOKEN_TYPE,
                                   extra=resource)
    assert_refused(refused, "invalid_request")
    assert "actor_token" in refused.json()["error_description"]


async def test_outside_subject_cannot_be_a_local_identity(exchange_deputy: RunningDeputy) -> None:
    """A trusted issuer speaks for its own subjects, never for Deputy's users or clients."""
    deputy = exchange_deputy
    actor = await agent_own_token(deputy, AGENT_A)
    alice_sub = claims_of((await tokens_for_alice(deputy))[0])["sub"]
    for local in (alice_sub, AGENT_B):
        subject = idp_token(deputy, sub=local, may_act={"client_id": AGENT_A})
        refused = await exchange_token(deputy, AGENT_A, subject, actor, subject_token_type=JWT_TOKEN_TYPE,
                                       extra=[("resource", deputy.resource("demo"))])
        assert_refused(refused, "invalid_grant")
        assert "outside issuer" in refused.json()["error_description"]


async def test_outside_act_hops_are_attributed_to_their_issuer(exchange_deputy: RunningDeputy) -> None:
    """Deputy vouches for the hops it minted; a hop the IdP recorded without an iss is marked as the IdP's."""
    deputy = exchange_deputy
    subject = idp_token(deputy, may_act={"client_id": AGENT_A}, act={"sub": "idp-side-agent"})
    response = await exchange_token(deputy, AGENT_A, subject, await agent_own_token(deputy, AGENT_A),
                                    subject_token_type=JWT_TOKEN_TYPE, extra=[("resource", deputy.resource("demo"))])
    chain = claims_of(exchanged(response))["act"]
    assert chain["sub"] == AGENT_A and chain["iss"] == deputy.url
    assert chain["act"] == {"sub": "idp-side-agent", "iss": IDP}


@pytest.mark.parametrize("case", ["expired", "other audience", "other key", "unknown issuer", "no sub",
                                  "malformed act"])
async def test_bad_trusted_issuer_subject_token_is_invalid_grant(exchange_deputy: RunningDeputy, case: str) -> None:
    deputy = exchange_deputy
    now = int(time.time())
    subject = {
        "expired": lambda: idp_token(deputy, iat=now - 300, exp=now - 60),
        "other audience": lambda: idp_token(deputy, aud="https://elsewhere.example"),
        "other key": lambda: idp_token(deputy, key=ECKey.generate_key("P-256", parameters={"kid": "idp-1"},
                                                                      private=True)),
        "unknown issuer": lambda: idp_token(deputy, iss="https://stranger.example"),
        "no sub": lambda: idp_token(deputy, sub=None),
        "malformed act": lambda: idp_token(deputy, act={"sub": "x", "exp": now + 60}),
    }[case]()
    response = await exchange_token(deputy, AGENT_A, subject, await agent_own_token(deputy, AGENT_A),
                                    subject_token_type=JWT_TOKEN_TYPE, extra=[("resource", deputy.resource("demo"))])
    assert_refused(response, "invalid_grant")
