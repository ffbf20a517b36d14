"""The authorization request (OAuth 2.1 §4.1.1-§4.1.2.1, RFC 8707, RFC 9207; MCP AS-8, AS-9).

While the client or its redirect URI is in doubt Deputy must show an error page and
never redirect; once both are known, errors go back to the client with error, state
and iss.
"""

from __future__ import annotations

import httpx
import pytest

from tests.support.deputy_process import REDIRECT_URI, RunningDeputy
from tests.support.oauth_flow import OMIT, Authorization, authorize

ATTACKER = "http://attacker.example/callback"


def assert_error_page(auth: Authorization, forbidden_prefix: str | None = None) -> httpx.Response:
    """An HTML 400 page, not a redirect anywhere."""
    assert auth.redirect is None, f"redirected to {auth.redirect and auth.redirect.url}"
    page = auth.page
    assert page is not None
    assert page.status_code == 400
    assert page.headers["content-type"].startswith("text/html")
    assert "location" not in page.headers
    if forbidden_prefix is not None:
        for response in auth.history:
            assert not response.headers.get("location", "").startswith(forbidden_prefix)
    return page


def assert_redirected_error(deputy: RunningDeputy, auth: Authorization, error: str) -> None:
    """OAuth 2.1 §4.1.2.1 + RFC 9207 §2: error=, state echoed, iss, no code, to the registered URI."""
    assert auth.redirect is not None, f"stopped on HTTP {auth.page and auth.page.status_code}"
    assert auth.redirect.url.startswith(REDIRECT_URI + "?")
    assert auth.redirect.error == error
    assert auth.redirect.code is None
    assert auth.redirect.state == auth.state
    assert auth.redirect.iss == deputy.url


@pytest.mark.parametrize("redirect_uri", [
    ATTACKER,
    REDIRECT_URI + "/",                       # trailing slash
    REDIRECT_URI + "?x=1",                    # extra query
    REDIRECT_URI.replace(":9/", ":10/"),      # other port
    REDIRECT_URI.replace("localhost", "[::1]"),  # another loopback host
    REDIRECT_URI.upper(),
])
async def test_unregistered_redirect_uri_gets_an_error_page_not_a_redirect(
        deputy: RunningDeputy, browser: httpx.AsyncClient, redirect_uri: str) -> None:
    """MCP AS-8: exact redirect URI match; a mismatch is an HTML 400 page, never a redirect (OAuth 2.1 §4.1.2.1)."""
    auth = await authorize(deputy, browser=browser, redirect_uri=redirect_uri)
    assert_error_page(auth, forbidden_prefix=redirect_uri)


async def test_repeated_redirect_uri_gets_an_error_page(deputy: RunningDeputy, browser: httpx.AsyncClient) -> None:
    """MCP AS-8 / RFC 6749 §3.1: redirect_uri twice (registered + attacker) → error page, no redirect."""
    auth = await authorize(deputy, browser=browser, extra=[("redirect_uri", ATTACKER)])
    assert_error_page(auth, forbidden_prefix=ATTACKER)


async def test_unknown_client_gets_an_error_page(deputy: RunningDeputy, browser: httpx.AsyncClient) -> None:
    """MCP AS-8 / OAuth 2.1 §4.1.2.1: unknown client_id → HTML 400 page, no redirect to the given URI."""
    auth = await authorize(deputy, browser=browser, client_id="no-such-client", redirect_uri=ATTACKER)
    assert_error_page(auth, forbidden_prefix=ATTACKER)


async def test_missing_client_gets_an_error_page(deputy: RunningDeputy, browser: httpx.AsyncClient) -> None:
    """MCP AS-8 / OAuth 2.1 §4.1.2.1: no client_id → HTML 400 page."""
    auth = await authorize(deputy, browser=browser, client_id=OMIT)
    assert_error_page(auth, forbidden_prefix=REDIRECT_URI)


async def test_missing_resource_is_invalid_target(deputy: RunningDeputy, browser: httpx.AsyncClient) -> None:
    """MCP AS-9 / RFC 8707 §2: no resource → error=invalid_target (with state and iss)."""
    auth = await authorize(deputy, browser=browser, resource=OMIT)
    assert_redirected_error(deputy, auth, "invalid_target")


@pytest.mark.parametrize("resource", [
    "{url}/mcp/nope",
    "{url}/mcp",
    "{url}/mcp/demo/extra",
    "http://attacker.example/mcp/demo",
    "{url}",
    "http://[",  # not parseable at all: still invalid_target, never a 500
    "{url}/mcp/demo#fragment",  # RFC 8707 §2: no fragment
])
async def test_unknown_resource_is_invalid_target(
        deputy: RunningDeputy, browser: httpx.AsyncClient, resource: str) -> None:
    """MCP AS-9 / RFC 8707 §2: a resource Deputy does not protect → error=invalid_target."""
    auth = await authorize(deputy, browser=browser, resource=resource.format(url=deputy.url))
    assert_redirected_error(deputy, auth, "invalid_target")


@pytest.mark.parametrize("name", ["scope", "state", "resource", "code_challenge", "response_type", "client_id"])
async def test_repeated_parameter_is_invalid_request(
        deputy: RunningDeputy, browser: httpx.AsyncClient, name: str) -> None:
    """OAuth 2.1 §3.1 / RFC 6749 §3.1: a parameter sent twice → error=invalid_request."""
    values = {"scope": "demo:tools", "state": "again", "resource": deputy.resource("demo"),
              "code_challenge": "A" * 43, "response_type": "code", "client_id": "test-public"}
    first = {"scope": "demo:tools"} if name == "scope" else {}
    auth = await authorize(deputy, browser=browser, **first, extra=[(name, values[name])])  # type: ignore[arg-type]
    assert auth.redirect is not None
    assert auth.redirect.error == "invalid_request"
    assert auth.redirect.code is None
    assert auth.redirect.iss == deputy.url


async def test_unknown_scope_is_invalid_scope(deputy: RunningDeputy, browser: httpx.AsyncClient) -> None:
    """OAuth 2.1 §4.1.2.1: a scope the server does not define → error=invalid_scope."""
    auth = await authorize(deputy, browser=browser, scope="demo:tools demo:root")
    assert_redirected_error(deputy, auth, "invalid_scope")


async def test_scope_of_another_server_is_invalid_scope(deputy: RunningDeputy, browser: httpx.AsyncClient) -> None:
    """MCP AS-9: scopes of server `other` cannot be requested for `demo` → error=invalid_scope."""
    auth = await authorize(deputy, browser=browser, scope="other:tools")
    assert_redirected_error(deputy, auth, "invalid_scope")


@pytest.mark.parametrize("response_type", ["token", "code token", "id_token"])
async def test_other_response_types_are_refused(
        deputy: RunningDeputy, browser: httpx.AsyncClient, response_type: str) -> None:
    """OAuth 2.1 §4.1.2.1 (no implicit grant): response_type other than code → unsupported_response_type."""
    auth = await authorize(deputy, browser=browser, response_type=response_type)
    assert_redirected_error(deputy, auth, "unsupported_response_type")
