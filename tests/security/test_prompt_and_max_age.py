"""``prompt`` and ``max_age`` on Deputy's authorization request (OpenID Connect Core 1.0 §3.1.2.1, issue 14).

An MCP client may ask for a fresh sign-in: ``prompt=login`` or a ``max_age`` the session is older than makes Deputy
ask again though the browser is signed in, once (a sign-in made after the request satisfies it: no loop); with an
identity provider both are passed on (tests/security/test_federated_sign_in_pages.py). Bad values are refused
(``invalid_request``, redirected: client and redirect URI are known by then).
"""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx
import pytest

from tests.support.deputy_process import RunningDeputy
from tests.support.oauth_flow import authorize


def logins(history: list[httpx.Response]) -> int:
    return sum(1 for r in history if r.request.method == "POST" and urlsplit(str(r.request.url)).path ==
               "/authorize/login")


@pytest.mark.parametrize("extra", [[("prompt", "login")], [("max_age", "0")], [("prompt", "consent login")]])
async def test_a_signed_in_browser_signs_in_again_once(deputy: RunningDeputy, extra: list[tuple[str, str]]) -> None:
    async with httpx.AsyncClient(timeout=30) as browser:
        first = await authorize(deputy, browser=browser)
        assert first.redirect is not None and first.redirect.code and logins(first.history) == 1
        plain = await authorize(deputy, browser=browser)
        assert plain.redirect is not None and plain.redirect.code and logins(plain.history) == 0
        again = await authorize(deputy, browser=browser, extra=extra)
        assert again.redirect is not None and again.redirect.code, again.page and again.page.text
        assert logins(again.history) == 1


async def test_a_recent_enough_session_is_not_asked_again(deputy: RunningDeputy) -> None:
    async with httpx.AsyncClient(timeout=30) as browser:
        await authorize(deputy, browser=browser)
        again = await authorize(deputy, browser=browser, extra=[("max_age", "3600")])
        assert again.redirect is not None and again.redirect.code and logins(again.history) == 0


@pytest.mark.parametrize("extra", [
    [("prompt", "bogus")], [("prompt", "")], [("prompt", "login"), ("prompt", "none")], [("max_age", "-1")],
    [("max_age", "ten")], [("max_age", "1e3")], [("max_age", "٣")], [("max_age", "9" * 30)],
    [("max_age", "1"), ("max_age", "2")]])
async def test_bad_prompt_or_max_age_is_invalid_request(deputy: RunningDeputy, extra: list[tuple[str, str]]) -> None:
    result = await authorize(deputy, extra=extra)
    assert result.redirect is not None and result.redirect.error == "invalid_request", result.page
