"""PKCE (RFC 7636, OAuth 2.1 §4.1.1 / §7.5.2; MCP AS-1): S256 required, verifier checked, failure burns the code."""

from __future__ import annotations

import httpx

from tests.security.helpers import oauth_error
from tests.support.deputy_process import RunningDeputy
from tests.support.oauth_flow import OMIT, Pkce, authorize, exchange


async def test_missing_code_challenge_is_redirected_as_invalid_request(
        deputy: RunningDeputy, browser: httpx.AsyncClient) -> None:
    """MCP AS-1 / OAuth 2.1 §4.1.2.1: no code_challenge → error=invalid_request, with iss (RFC 9207) and state."""
    auth = await authorize(deputy, browser=browser, challenge=OMIT, method=OMIT, state="st-no-pkce")
    assert auth.redirect is not None
    assert auth.redirect.error == "invalid_request"
    assert auth.redirect.code is None
    assert auth.redirect.state == "st-no-pkce"
    assert auth.redirect.iss == deputy.url


async def test_plain_method_is_refused(deputy: RunningDeputy, browser: httpx.AsyncClient) -> None:
    """MCP AS-1 / OAuth 2.1 §7.5.2: code_challenge_method=plain → invalid_request (S256 only)."""
    pkce = Pkce.new()
    verifier43 = pkce.verifier[:43]
    auth = await authorize(deputy, browser=browser, challenge=verifier43, method="plain", state="st-plain")
    assert auth.redirect is not None
    assert auth.redirect.error == "invalid_request"
    assert auth.redirect.code is None
    assert auth.redirect.state == "st-plain"
    assert auth.redirect.iss == deputy.url


async def test_missing_method_defaults_to_plain_and_is_refused(
        deputy: RunningDeputy, browser: httpx.AsyncClient) -> None:
    """MCP AS-1 / RFC 7636 §4.3: an omitted method means plain, which Deputy refuses → invalid_request."""
    auth = await authorize(deputy, browser=browser, method=OMIT)
    assert auth.redirect is not None
    assert auth.redirect.error == "invalid_request"
    assert auth.redirect.code is None


async def test_wrong_verifier_is_invalid_grant_and_burns_the_code(
        deputy: RunningDeputy, browser: httpx.AsyncClient) -> None:
    """MCP AS-1 / RFC 7636 §4.6: wrong code_verifier → invalid_grant; the code is then dead for the right one too."""
    auth = await authorize(deputy, browser=browser)
    wrong = await exchange(deputy, auth.code, verifier=Pkce.new().verifier)
    assert wrong.status_code == 400
    assert oauth_error(wrong) == "invalid_grant"

    right = await exchange(deputy, auth.code, verifier=auth.verifier or "")
    assert right.status_code == 400
    assert oauth_error(right) == "invalid_grant"


async def test_missing_verifier_is_invalid_request(deputy: RunningDeputy, browser: httpx.AsyncClient) -> None:
    """MCP AS-1 / OAuth 2.1 §4.1.3: a code exchange without code_verifier → invalid_request."""
    auth = await authorize(deputy, browser=browser)
    response = await exchange(deputy, auth.code, verifier=OMIT)
    assert response.status_code == 400
    assert oauth_error(response) == "invalid_request"


async def test_challenge_itself_as_verifier_is_invalid_grant(deputy: RunningDeputy, browser: httpx.AsyncClient) -> None:
    """MCP AS-1 / RFC 7636 §4.6: sending the (public) challenge as the verifier → invalid_grant."""
    pkce = Pkce.new()
    auth = await authorize(deputy, browser=browser, pkce=pkce)
    response = await exchange(deputy, auth.code, verifier=pkce.challenge)
    assert response.status_code == 400
    assert oauth_error(response) == "invalid_grant"
