"""Refresh tokens: rotation, reuse detection, narrowing only (OAuth 2.1 §4.3, RFC 9700 §4.14.2; MCP AS-6)."""

from __future__ import annotations

import httpx
import pytest

from tests.security.helpers import assert_invalid_token, oauth_error, wait_for_status
from tests.support.deputy_process import CONFIDENTIAL_CLIENT, CONFIDENTIAL_SECRET, RunningDeputy
from tests.support.oauth_flow import mcp_post, refresh, tokens_for_alice


async def test_reused_refresh_token_revokes_the_whole_family(deputy: RunningDeputy, browser: httpx.AsyncClient) -> None:
    """MCP AS-6 / RFC 9700 §4.14.2: replaying a used refresh token → invalid_grant; successor and access tokens die."""
    access1, refresh1 = await tokens_for_alice(deputy, browser=browser)
    rotated = await refresh(deputy, refresh1)
    assert rotated.status_code == 200, rotated.text
    access2, refresh2 = rotated.json()["access_token"], rotated.json()["refresh_token"]
    assert refresh2 != refresh1
    assert (await mcp_post(deputy, access2)).status_code == 200

    replay = await refresh(deputy, refresh1)
    assert replay.status_code == 400
    assert oauth_error(replay) == "invalid_grant"

    successor = await refresh(deputy, refresh2)
    assert successor.status_code == 400
    assert oauth_error(successor) == "invalid_grant"

    for token in (access1, access2):
        refused = await wait_for_status(lambda t=token: mcp_post(deputy, t), 401)  # type: ignore[misc]
        assert_invalid_token(deputy, refused)


async def test_refresh_with_wider_scope_is_invalid_scope(deputy: RunningDeputy, browser: httpx.AsyncClient) -> None:
    """OAuth 2.1 §4.3.1: a refresh may only narrow the scope; asking for more → invalid_scope."""
    _access, refresh_token = await tokens_for_alice(deputy, browser=browser)
    response = await refresh(deputy, refresh_token, scope="demo:tools demo:admin")
    assert response.status_code == 400
    assert oauth_error(response) == "invalid_scope"


async def test_refused_refresh_request_does_not_burn_the_refresh_token(
        deputy: RunningDeputy, browser: httpx.AsyncClient) -> None:
    """OAuth 2.1 §4.3 / RFC 9700 §4.14.2: a refresh refused for its parameters (invalid_scope) must not consume
    the token; otherwise the client's next, correct refresh looks like a replay and revokes its grant."""
    _access, refresh_token = await tokens_for_alice(deputy, browser=browser)
    refused = await refresh(deputy, refresh_token, scope="demo:tools demo:admin")
    assert oauth_error(refused) == "invalid_scope"
    retry = await refresh(deputy, refresh_token)
    assert retry.status_code == 200, retry.text


async def test_refresh_by_another_client_is_invalid_grant(deputy: RunningDeputy, browser: httpx.AsyncClient) -> None:
    """OAuth 2.1 §4.3.1: a refresh token is bound to its client; another client → invalid_grant (token survives)."""
    _access, refresh_token = await tokens_for_alice(deputy, browser=browser)
    stolen = await refresh(deputy, refresh_token, basic=(CONFIDENTIAL_CLIENT, CONFIDENTIAL_SECRET))
    assert stolen.status_code == 400
    assert oauth_error(stolen) == "invalid_grant"
    own = await refresh(deputy, refresh_token)
    assert own.status_code == 200, own.text


async def test_refresh_for_another_resource_is_invalid_target(
        deputy: RunningDeputy, browser: httpx.AsyncClient) -> None:
    """MCP AS-9 / RFC 8707 §2.2: a refresh token for /mcp/demo cannot buy a token for /mcp/other → invalid_target."""
    _access, refresh_token = await tokens_for_alice(deputy, browser=browser)
    response = await refresh(deputy, refresh_token, resource=deputy.resource("other"))
    assert response.status_code == 400
    assert oauth_error(response) == "invalid_target"


@pytest.mark.parametrize("kind", ["garbage", "access_token"])
async def test_unknown_refresh_token_is_invalid_grant(
        deputy: RunningDeputy, browser: httpx.AsyncClient, kind: str) -> None:
    """OAuth 2.1 §4.3.1: a value that is not a live refresh token (random, or an access token) → invalid_grant."""
    access, _refresh = await tokens_for_alice(deputy, browser=browser) if kind == "access_token" else ("", "")
    response = await refresh(deputy, access or "not-a-refresh-token-" + "x" * 30)
    assert response.status_code == 400
    assert oauth_error(response) == "invalid_grant"
