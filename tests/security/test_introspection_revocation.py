"""Introspection (RFC 7662), revocation (RFC 7009) and consent revocation (`deputy consents revoke`).

Revocations reach other replicas' gateways through their poll of the database (the gateway checks
are bounded polls, `wait_for_status`, never timing assertions); the replica that revoked applies it at once.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.security.helpers import oauth_error, wait_for_status
from tests.support.agents import (
    JWT_AGENT,
    SECRET_AGENT,
    SECRET_AGENT_SECRET,
    agent_token,
    agents_deputy,
    assertion,
    assertion_fields,
    post_form,
)
from tests.support.deputy_process import (
    CONFIDENTIAL_CLIENT,
    CONFIDENTIAL_SECRET,
    PUBLIC_CLIENT,
    RunningDeputy,
)
from tests.support.oauth_flow import mcp_post, refresh, tokens_for_alice

CONFIDENTIAL = (CONFIDENTIAL_CLIENT, CONFIDENTIAL_SECRET)


@pytest.fixture(scope="module")
def agents(backend: str, upstream_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDeputy]:
    directory: Path = tmp_path_factory.mktemp(f"deputy-introspection-{backend}")
    with agents_deputy(backend, upstream_url, directory) as running:
        yield running


@pytest.fixture(scope="module")
async def alice_browser(agents: RunningDeputy) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=30) as client:
        yield client


async def confidential_tokens(agents: RunningDeputy, browser: httpx.AsyncClient) -> tuple[str, str]:
    """alice's (access, refresh) through test-confidential (client_secret_basic)."""
    return await tokens_for_alice(agents, client_id=CONFIDENTIAL_CLIENT, basic=CONFIDENTIAL, browser=browser)


async def introspect(agents: RunningDeputy, token: str, *, basic: tuple[str, str] | None = CONFIDENTIAL,
                     auth: list[tuple[str, str]] | None = None, hint: str | None = None) -> httpx.Response:
    data = [("token", token), *(auth or [])]
    if hint is not None:
        data.append(("token_type_hint", hint))
    return await post_form(agents, "/introspect", data, basic=basic)


async def introspected(agents: RunningDeputy, token: str, **kwargs: Any) -> dict[str, Any]:
    response = await introspect(agents, token, **kwargs)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"  # RFC 7662 §2.2 via OAuth 2.1 §3.2.3
    body: dict[str, Any] = response.json()
    return body


async def revoke(agents: RunningDeputy, token: str, *, basic: tuple[str, str] | None = CONFIDENTIAL,
                 auth: list[tuple[str, str]] | None = None, hint: str | None = None) -> httpx.Response:
    data = [("token", token), *(auth or [])]
    if hint is not None:
        data.append(("token_type_hint", hint))
    return await post_form(agents, "/revoke", data, basic=basic)


def jwt_agent_auth(agents: RunningDeputy) -> list[tuple[str, str]]:
    return assertion_fields(assertion(agents))


# --- introspection --------------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["nothing", "public client_id", "wrong secret", "public client"])
async def test_introspection_requires_client_authentication(
        agents: RunningDeputy, alice_browser: httpx.AsyncClient, how: str) -> None:
    """RFC 7662 §2.1: the caller authenticates; without it (or as a public client) → 401 invalid_client."""
    access, _ = await confidential_tokens(agents, alice_browser)
    basic: tuple[str, str] | None = None
    auth: list[tuple[str, str]] = []
    if how == "public client_id":
        auth = [("client_id", CONFIDENTIAL_CLIENT)]
    elif how == "wrong secret":
        basic = (CONFIDENTIAL_CLIENT, "wrong")
    elif how == "public client":
        auth = [("client_id", PUBLIC_CLIENT)]
    response = await introspect(agents, access, basic=basic, auth=auth)
    assert response.status_code == 401, response.text
    assert oauth_error(response) == "invalid_client"
    assert "active" not in response.json()


async def test_introspection_of_an_active_access_token(
        agents: RunningDeputy, alice_browser: httpx.AsyncClient) -> None:
    """RFC 7662 §2.2: the claims a resource server needs, for the client's own token."""
    access, _ = await confidential_tokens(agents, alice_browser)
    body = await introspected(agents, access, hint="access_token")
    assert body["active"] is True
    assert body["iss"] == agents.url
    assert body["aud"] == agents.resource("demo")
    assert body["client_id"] == CONFIDENTIAL_CLIENT
    assert body["scope"] == "demo:tools"
    assert body["token_type"] == "Bearer"
    assert isinstance(body["sub"], str) and body["sub"] and body["sub"] != CONFIDENTIAL_CLIENT
    assert body["exp"] > body["iat"] and isinstance(body["auth_time"], int) and body["jti"]
    # A wrong hint only changes the search order (RFC 7662 §2.1).
    assert (await introspected(agents, access, hint="refresh_token"))["active"] is True


async def test_introspection_of_an_active_refresh_token(
        agents: RunningDeputy, alice_browser: httpx.AsyncClient) -> None:
    """RFC 7662 §2.2: a refresh token is active with its client_id, scope and exp."""
    _, refresh_token = await confidential_tokens(agents, alice_browser)
    body = await introspected(agents, refresh_token, hint="refresh_token")
    assert body["active"] is True
    assert body["client_id"] == CONFIDENTIAL_CLIENT and body["scope"] == "demo:tools" and body["exp"] > 0
    # Rotated: the used token is no longer active, its successor is.
    rotated = await refresh(agents, refresh_token, basic=CONFIDENTIAL)
    assert rotated.status_code == 200, rotated.text
    assert await introspected(agents, refresh_token) == {"active": False}
    assert (await introspected(agents, rotated.json()["refresh_token"]))["active"] is True


async def test_introspection_by_a_private_key_jwt_client(agents: RunningDeputy) -> None:
    """An agent authenticates at /introspect with an assertion; its own token's sub is itself."""
    token = await agent_token(agents)
    body = await introspected(agents, token, basic=None, auth=jwt_agent_auth(agents))
    assert body["active"] is True and body["sub"] == JWT_AGENT == body["client_id"]
    assert "auth_time" not in body


async def test_another_clients_token_is_inactive(agents: RunningDeputy, alice_browser: httpx.AsyncClient) -> None:
    """A client learns nothing about tokens issued to other clients: {"active": false}, nothing more."""
    access, refresh_token = await confidential_tokens(agents, alice_browser)
    for token in (access, refresh_token):
        assert await introspected(agents, token, basic=(SECRET_AGENT, SECRET_AGENT_SECRET)) == {"active": False}
    agent = await agent_token(agents)
    assert await introspected(agents, agent) == {"active": False}


@pytest.mark.parametrize("token", ["garbage", "a.b.c", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."])
async def test_unknown_tokens_are_inactive(agents: RunningDeputy, token: str) -> None:
    """RFC 7662 §2.2: anything Deputy did not issue is simply inactive."""
    assert await introspected(agents, token) == {"active": False}


async def test_introspection_without_token_is_invalid_request(agents: RunningDeputy) -> None:
    response = await post_form(agents, "/introspect", [], basic=CONFIDENTIAL)
    assert response.status_code == 400 and oauth_error(response) == "invalid_request"


# --- revocation -----------------------------------------------------------------------------------


async def test_revocation_requires_client_authentication(
        agents: RunningDeputy, alice_browser: httpx.AsyncClient) -> None:
    """RFC 7009 §2.1: no client identification, or a wrong secret → 401; the token survives."""
    _access, refresh_token = await confidential_tokens(agents, alice_browser)
    for basic in (None, (CONFIDENTIAL_CLIENT, "wrong")):
        response = await revoke(agents, refresh_token, basic=basic)
        assert response.status_code == 401 and oauth_error(response) == "invalid_client"
    assert (await introspected(agents, refresh_token))["active"] is True


async def test_revoking_a_refresh_token_kills_the_family_at_the_gateway(
        agents: RunningDeputy, alice_browser: httpx.AsyncClient) -> None:
    """RFC 7009 §2.1: revoking the refresh token revokes its grant — refresh and access tokens alike."""
    access, refresh_token = await confidential_tokens(agents, alice_browser)
    assert (await mcp_post(agents, access)).status_code == 200
    response = await revoke(agents, refresh_token, hint="refresh_token")
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    refused = await refresh(agents, refresh_token, basic=CONFIDENTIAL)
    assert refused.status_code == 400 and oauth_error(refused) == "invalid_grant"
    assert await introspected(agents, access) == {"active": False}
    at_gateway = await wait_for_status(lambda: mcp_post(agents, access), 401)
    assert at_gateway.status_code == 401, "the access token of a revoked family is refused after the poll"


async def test_a_revocation_made_here_is_refused_here_at_once(
        agents: RunningDeputy, alice_browser: httpx.AsyncClient) -> None:
    """Issue 11 (finding 9a): the replica that revoked a grant applies it before answering, without waiting for
    its poll — by /revoke and by refresh-token reuse alike (other replicas get it by their poll)."""
    access, refresh_token = await confidential_tokens(agents, alice_browser)
    assert (await mcp_post(agents, access)).status_code == 200
    assert (await revoke(agents, refresh_token, hint="refresh_token")).status_code == 200
    assert (await mcp_post(agents, access)).status_code == 401

    access, refresh_token = await confidential_tokens(agents, alice_browser)
    assert (await refresh(agents, refresh_token, basic=CONFIDENTIAL)).status_code == 200
    assert (await mcp_post(agents, access)).status_code == 200
    replayed = await refresh(agents, refresh_token, basic=CONFIDENTIAL)
    assert replayed.status_code == 400 and oauth_error(replayed) == "invalid_grant"
    assert (await mcp_post(agents, access)).status_code == 401


async def test_revoking_an_access_token_revokes_its_grant(agents: RunningDeputy) -> None:
    """An agent revokes its own client-credentials token (authenticating with an assertion)."""
    token = await agent_token(agents)
    assert (await mcp_post(agents, token)).status_code == 200
    response = await revoke(agents, token, basic=None, auth=jwt_agent_auth(agents))
    assert response.status_code == 200, response.text
    assert await introspected(agents, token, basic=None, auth=jwt_agent_auth(agents)) == {"active": False}
    assert (await wait_for_status(lambda: mcp_post(agents, token), 401)).status_code == 401


async def test_revoking_another_clients_token_is_refused(
        agents: RunningDeputy, alice_browser: httpx.AsyncClient) -> None:
    """RFC 7009 §2.1: the token must have been issued to the revoking client; it stays valid."""
    access, refresh_token = await confidential_tokens(agents, alice_browser)
    for token in (access, refresh_token):
        response = await revoke(agents, token, basic=(SECRET_AGENT, SECRET_AGENT_SECRET))
        assert response.status_code == 400 and oauth_error(response) == "invalid_request"
    assert (await introspected(agents, refresh_token))["active"] is True
    assert (await mcp_post(agents, access)).status_code == 200


async def test_revoking_an_unknown_token_is_ok(agents: RunningDeputy) -> None:
    """RFC 7009 §2.2: an invalid token is answered 200 — the client cannot do anything else about it."""
    response = await revoke(agents, "not-a-token-deputy-issued")
    assert response.status_code == 200 and response.content == b""
    missing = await post_form(agents, "/revoke", [], basic=CONFIDENTIAL)
    assert missing.status_code == 400 and oauth_error(missing) == "invalid_request"


async def test_public_client_revokes_its_own_refresh_token(
        agents: RunningDeputy, alice_browser: httpx.AsyncClient) -> None:
    """RFC 7009 §5: a public client identifies itself with client_id and may revoke its own tokens."""
    _, refresh_token = await tokens_for_alice(agents, browser=alice_browser)
    response = await revoke(agents, refresh_token, basic=None, auth=[("client_id", PUBLIC_CLIENT)])
    assert response.status_code == 200, response.text
    refused = await refresh(agents, refresh_token)
    assert refused.status_code == 400 and oauth_error(refused) == "invalid_grant"


# --- consents -------------------------------------------------------------------------------------


async def test_revoking_a_consent_revokes_its_tokens(agents: RunningDeputy, alice_browser: httpx.AsyncClient) -> None:
    """`deputy consents revoke`: the consent is gone, its refresh tokens are dead, its access tokens refused."""
    access, refresh_token = await tokens_for_alice(agents, browser=alice_browser)
    other_access, _ = await tokens_for_alice(agents, agents.resource("other"), browser=alice_browser)
    listed = agents.cli("consents", "list", "--user", "alice")
    assert listed.returncode == 0, listed.stderr
    assert PUBLIC_CLIENT in listed.stdout and "demo" in listed.stdout

    revoked = agents.cli("consents", "revoke", "--user", "alice", "--client", PUBLIC_CLIENT, "--server", "demo")
    assert revoked.returncode == 0, revoked.stderr
    assert "revoked 1 consent" in revoked.stdout

    refused = await refresh(agents, refresh_token)
    assert refused.status_code == 400 and oauth_error(refused) == "invalid_grant"
    assert (await wait_for_status(lambda: mcp_post(agents, access), 401)).status_code == 401
    # Only that server's consent: the token for "other" still works.
    assert (await mcp_post(agents, other_access, server="other")).status_code == 200
    after = agents.cli("consents", "list", "--user", "alice")
    assert after.returncode == 0, after.stderr
    # The list still shows the consent for "other" (so an empty answer cannot pass), and none for "demo".
    rows = [line.split() for line in after.stdout.splitlines() if PUBLIC_CLIENT in line]
    assert [row for row in rows if "other" in row] and not [row for row in rows if "demo" in row], after.stdout


async def test_consents_revoke_reports_nothing_to_revoke(agents: RunningDeputy) -> None:
    nobody = agents.cli("consents", "revoke", "--user", "nobody", "--client", PUBLIC_CLIENT)
    assert nobody.returncode == 1 and "no user nobody" in nobody.stderr
    nothing = agents.cli("consents", "revoke", "--user", "alice", "--client", "never-consented")
    assert nothing.returncode == 1 and "no consent" in nothing.stderr
