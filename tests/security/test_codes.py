"""Authorization codes at the token endpoint (OAuth 2.1 §4.1.3, RFC 9700 §4.2.4 / §4.5, RFC 8707 §2.2)."""

from __future__ import annotations

import httpx
import pytest

from tests.security.helpers import assert_invalid_token, oauth_error, wait_for_status
from tests.support.deputy_process import CONFIDENTIAL_CLIENT, CONFIDENTIAL_SECRET, REDIRECT_URI, RunningDeputy
from tests.support.oauth_flow import OMIT, authorize, exchange, mcp_post, refresh


async def test_reused_code_is_invalid_grant_and_revokes_the_first_access_token(
        deputy: RunningDeputy, browser: httpx.AsyncClient) -> None:
    """OAuth 2.1 §4.1.3: a code used twice → invalid_grant, and tokens already issued from it are revoked."""
    auth = await authorize(deputy, browser=browser)
    first = await exchange(deputy, auth.code, verifier=auth.verifier or "")
    assert first.status_code == 200, first.text
    access_token = first.json()["access_token"]
    accepted = await mcp_post(deputy, access_token)
    assert accepted.status_code == 200, accepted.text

    again = await exchange(deputy, auth.code, verifier=auth.verifier or "")
    assert again.status_code == 400
    assert oauth_error(again) == "invalid_grant"

    refused = await wait_for_status(lambda: mcp_post(deputy, access_token), 401)
    assert_invalid_token(deputy, refused)


async def test_reused_code_also_kills_the_refresh_token(deputy: RunningDeputy, browser: httpx.AsyncClient) -> None:
    """OAuth 2.1 §4.1.3: after code reuse, the refresh token issued by the first redemption is dead too."""
    auth = await authorize(deputy, browser=browser)
    first = await exchange(deputy, auth.code, verifier=auth.verifier or "")
    assert first.status_code == 200, first.text
    await exchange(deputy, auth.code, verifier=auth.verifier or "")

    response = await refresh(deputy, first.json()["refresh_token"])
    assert response.status_code == 400
    assert oauth_error(response) == "invalid_grant"


@pytest.mark.parametrize("redirect_uri", [REDIRECT_URI + "/", "http://attacker.example/callback", OMIT])
async def test_redirect_uri_mismatch_at_token_is_invalid_grant(
        deputy: RunningDeputy, browser: httpx.AsyncClient, redirect_uri: object) -> None:
    """MCP AS-8 / OAuth 2.1 §4.1.3: redirect_uri at /token must equal the one sent at /authorize → invalid_grant."""
    auth = await authorize(deputy, browser=browser)
    response = await exchange(deputy, auth.code, verifier=auth.verifier or "", redirect_uri=redirect_uri)  # type: ignore[arg-type]
    assert response.status_code == 400
    assert oauth_error(response) == "invalid_grant"


async def test_redirect_uri_may_be_omitted_at_token_when_omitted_at_authorize(
        deputy: RunningDeputy, browser: httpx.AsyncClient) -> None:
    """OAuth 2.1 §4.1.3: redirect_uri at /token is required only if it was in the authorization request."""
    auth = await authorize(deputy, browser=browser, redirect_uri=OMIT)
    response = await exchange(deputy, auth.code, verifier=auth.verifier or "", redirect_uri=OMIT)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("resource", ["{url}/mcp/other", "{url}/mcp/nope", "http://attacker.example/mcp/demo"])
async def test_resource_at_token_differing_from_authorized_is_invalid_target(
        deputy: RunningDeputy, browser: httpx.AsyncClient, resource: str) -> None:
    """MCP AS-9 / RFC 8707 §2.2: resource at /token differs from the authorized one → invalid_target."""
    auth = await authorize(deputy, browser=browser)
    response = await exchange(deputy, auth.code, verifier=auth.verifier or "",
                              resource=resource.format(url=deputy.url))
    assert response.status_code == 400
    assert oauth_error(response) == "invalid_target"


async def test_code_of_another_client_is_invalid_grant(deputy: RunningDeputy, browser: httpx.AsyncClient) -> None:
    """OAuth 2.1 §4.1.3: a code issued to test-public, redeemed by test-confidential → invalid_grant."""
    auth = await authorize(deputy, browser=browser)
    response = await exchange(deputy, auth.code, verifier=auth.verifier or "",
                              basic=(CONFIDENTIAL_CLIENT, CONFIDENTIAL_SECRET))
    assert response.status_code == 400
    assert oauth_error(response) == "invalid_grant"


async def test_unknown_code_is_invalid_grant(deputy: RunningDeputy, browser: httpx.AsyncClient) -> None:
    """OAuth 2.1 §4.1.3: a code Deputy never issued → invalid_grant."""
    auth = await authorize(deputy, browser=browser)
    response = await exchange(deputy, auth.code[:-2] + "xx", verifier=auth.verifier or "")
    assert response.status_code == 400
    assert oauth_error(response) == "invalid_grant"


async def test_repeated_parameter_at_token_is_invalid_request(
        deputy: RunningDeputy, browser: httpx.AsyncClient) -> None:
    """OAuth 2.1 §3.2 / RFC 6749 §3.2: a token request parameter sent twice → invalid_request. A second
    ``resource`` is different: RFC 8707 §2 allows several, and a server that issues tokens for exactly one
    answers invalid_target."""
    auth = await authorize(deputy, browser=browser)
    response = await exchange(deputy, auth.code, verifier=auth.verifier or "",
                              extra=[("code_verifier", auth.verifier or "")])
    assert response.status_code == 400
    assert oauth_error(response) == "invalid_request"
    auth = await authorize(deputy, browser=browser)
    response = await exchange(deputy, auth.code, verifier=auth.verifier or "",
                              extra=[("resource", deputy.resource("other"))])
    assert response.status_code == 400
    assert oauth_error(response) == "invalid_target"
