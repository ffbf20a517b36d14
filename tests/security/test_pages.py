"""Login and consent pages: CSRF, Origin, session renewal, framing, cookies.

MCP RS-11 and Security Best Practices; RFC 9700 §4.16; OAuth 2.1 §7.12. CSRF tokens are
bound to the browser (its session, or on the sign-in form its pre-session cookie) and to
the form's purpose (issue 11, finding 2): tokens from another session or another form,
attacker-chosen cookie/form pairs and foreign origins are refused.

Each test registers its own client (dynamic registration, loopback redirect URI), so
alice has never consented to it and the consent page is always shown.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from tests.support.deputy_process import PASSWORD, REDIRECT_URI, RunningDeputy
from tests.support.oauth_flow import Pkce
from tests.support.sdk_client import Form, parse_form, parse_redirect

COOKIES = ("deputy_csrf", "deputy_session")


@dataclass
class Walk:
    """A browser stopped on the consent page of a fresh client."""

    browser: httpx.AsyncClient
    client_id: str
    login_page: httpx.Response
    login_answer: httpx.Response
    consent_page: httpx.Response
    consent_form: Form
    state: str


async def register(deputy: RunningDeputy) -> str:
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{deputy.url}/register", json={
            "client_name": "Security test client", "redirect_uris": [REDIRECT_URI],
            "token_endpoint_auth_method": "none", "grant_types": ["authorization_code", "refresh_token"],
            "application_type": "native"})
    assert response.status_code == 201, response.text
    client_id: str = response.json()["client_id"]
    return client_id


def authorization_url(deputy: RunningDeputy, client_id: str, state: str) -> str:
    request = httpx.Request("GET", f"{deputy.url}/authorize", params={
        "response_type": "code", "client_id": client_id, "redirect_uri": REDIRECT_URI, "state": state,
        "code_challenge": Pkce.new().challenge, "code_challenge_method": "S256",
        "resource": deputy.resource("demo")})
    return str(request.url)


async def walk_to_consent(deputy: RunningDeputy, browser: httpx.AsyncClient, state: str = "st-pages") -> Walk:
    client_id = await register(deputy)
    url = authorization_url(deputy, client_id, state)
    login_page = await browser.get(url)
    assert login_page.status_code == 200, login_page.text
    form = parse_form(login_page.text)
    login_answer = await browser.post(form.resolve_action(url), data=form.data(username="alice", password=PASSWORD))
    assert login_answer.status_code == 303, login_answer.text
    consent_url = urljoin(url, login_answer.headers["location"])
    consent_page = await browser.get(consent_url)
    assert consent_page.status_code == 200, consent_page.text
    consent_form = parse_form(consent_page.text)
    assert consent_form.button_values("decision") == ["approve", "deny"]
    return Walk(browser, client_id, login_page, login_answer, consent_page, consent_form, state)


@pytest.fixture
async def walk(deputy: RunningDeputy) -> AsyncIterator[Walk]:
    async with httpx.AsyncClient(timeout=30) as browser:
        yield await walk_to_consent(deputy, browser)


def assert_forbidden_page(response: httpx.Response) -> None:
    assert response.status_code == 403, response.text
    assert response.headers["content-type"].startswith("text/html")
    assert "location" not in response.headers
    assert "set-cookie" not in response.headers


async def test_consent_without_csrf_token_is_403(deputy: RunningDeputy, walk: Walk) -> None:
    """MCP RS-11: consent POST without csrf_token → 403, no code; the pending request stays answerable."""
    data = walk.consent_form.data(("decision", "approve"))
    del data["csrf_token"]
    assert_forbidden_page(await walk.browser.post(f"{deputy.url}/authorize/consent", data=data))
    await _legitimate_consent_still_works(deputy, walk)


async def test_consent_with_mismatched_csrf_token_is_403(deputy: RunningDeputy, walk: Walk) -> None:
    """MCP RS-11: consent POST whose csrf_token does not match the cookie → 403, no code."""
    data = walk.consent_form.data(("decision", "approve"), csrf_token="A" * 43)
    assert_forbidden_page(await walk.browser.post(f"{deputy.url}/authorize/consent", data=data))
    await _legitimate_consent_still_works(deputy, walk)


async def test_consent_with_a_token_from_another_session_is_403(deputy: RunningDeputy, walk: Walk) -> None:
    """Finding 2: the attacker's own genuine cookie and token (their session), planted in the victim's browser,
    posted with the victim's session → 403."""
    async with httpx.AsyncClient(timeout=30) as attacker:
        attackers_walk = await walk_to_consent(deputy, attacker, "st-attacker")
        attackers_token = attackers_walk.consent_form.fields["csrf_token"]
        attackers_cookie = attacker.cookies.get("deputy_csrf")
    assert attackers_token != walk.consent_form.fields["csrf_token"] and attackers_cookie
    walk.browser.cookies.set("deputy_csrf", attackers_cookie, domain=urlsplit(deputy.url).hostname or "")
    data = walk.consent_form.data(("decision", "approve"), csrf_token=attackers_token)
    assert_forbidden_page(await walk.browser.post(f"{deputy.url}/authorize/consent", data=data))
    await _legitimate_consent_still_works(deputy, walk)


async def test_consent_with_an_attacker_chosen_cookie_and_form_pair_is_403(deputy: RunningDeputy, walk: Walk) -> None:
    """Finding 2: a planted deputy_csrf cookie and the same value in the form (double submit) do not pass → 403."""
    chosen = "attacker-chosen-" + "c" * 40
    walk.browser.cookies.set("deputy_csrf", chosen, domain=urlsplit(deputy.url).hostname or "")
    data = walk.consent_form.data(("decision", "approve"), csrf_token=chosen)
    assert_forbidden_page(await walk.browser.post(f"{deputy.url}/authorize/consent", data=data))
    await _legitimate_consent_still_works(deputy, walk)


async def test_login_with_an_attacker_chosen_cookie_and_form_pair_is_403(deputy: RunningDeputy) -> None:
    """Finding 2 / OAuth 2.1 §7.12 (login CSRF): a planted pre-session cookie and the same value as token → 403."""
    client_id = await register(deputy)
    chosen = "attacker-chosen-" + "p" * 40
    async with httpx.AsyncClient(timeout=30, cookies={"deputy_csrf": chosen}) as victim:
        url = authorization_url(deputy, client_id, "st-login-pair")
        page = await victim.get(url)
        assert page.status_code == 200, page.text
        data = parse_form(page.text).data(username="alice", password=PASSWORD, csrf_token=chosen)
        assert_forbidden_page(await victim.post(f"{deputy.url}/authorize/login", data=data))
        assert victim.cookies.get("deputy_session") is None


async def test_a_consent_token_is_refused_on_another_form(deputy: RunningDeputy, walk: Walk) -> None:
    """Finding 2: tokens are bound to the form's purpose; the consent token on the approval form, same session → 403.

    (Without the purpose binding the CSRF check passes and the page answers 404, no such approval.)"""
    token = walk.consent_form.fields["csrf_token"]
    answer = await walk.browser.post(f"{deputy.url}/approvals/no-such-approval",
                                     data={"csrf_token": token, "decision": "approve"})
    assert answer.status_code == 403, answer.text
    login_form = parse_form(walk.login_page.text)  # the sign-in token of this browser, on the consent form
    data = walk.consent_form.data(("decision", "approve"), csrf_token=login_form.fields["csrf_token"])
    assert_forbidden_page(await walk.browser.post(f"{deputy.url}/authorize/consent", data=data))
    await _legitimate_consent_still_works(deputy, walk)


@pytest.mark.parametrize("origin", ["https://attacker.example", "null", "http://localhost:9"])
async def test_a_post_from_a_foreign_origin_is_403(deputy: RunningDeputy, walk: Walk, origin: str) -> None:
    """Finding 2: a form POST whose Origin is present and not Deputy's → 403, even with the right token."""
    data = walk.consent_form.data(("decision", "approve"))
    answer = await walk.browser.post(f"{deputy.url}/authorize/consent", data=data, headers={"Origin": origin})
    assert_forbidden_page(answer)
    same_origin = await walk.browser.post(f"{deputy.url}/authorize/consent", data=data,
                                          headers={"Origin": deputy.url})
    assert same_origin.status_code == 303, same_origin.text


async def test_sign_in_starts_a_new_session_and_ends_the_old_one(deputy: RunningDeputy, walk: Walk) -> None:
    """No session fixation: signing in again in a browser gives a new session id, and the old id stops working."""
    old_session = walk.browser.cookies.get("deputy_session")
    assert old_session
    client_id = await register(deputy)
    url = authorization_url(deputy, client_id, "st-again")
    walk.browser.cookies.delete("deputy_session")  # another tab shows the sign-in form …
    page = await walk.browser.get(url)
    assert page.status_code == 200 and "Sign in" in page.text
    walk.browser.cookies.set("deputy_session", old_session, domain=urlsplit(deputy.url).hostname or "")
    form = parse_form(page.text)  # … and is submitted while the browser holds the old session
    answer = await walk.browser.post(form.resolve_action(url), data=form.data(username="alice", password=PASSWORD))
    assert answer.status_code == 303, answer.text
    new_session = walk.browser.cookies.get("deputy_session")
    assert new_session and new_session != old_session
    async with httpx.AsyncClient(timeout=30, cookies={"deputy_session": old_session}) as replay:
        replayed = await replay.get(urljoin(url, answer.headers["location"]))
    assert replayed.status_code == 200 and "Sign in to Deputy" in replayed.text, "the old session id still works"


async def _legitimate_consent_still_works(deputy: RunningDeputy, walk: Walk) -> None:
    answer = await walk.browser.post(f"{deputy.url}/authorize/consent",
                                     data=walk.consent_form.data(("decision", "approve")))
    assert answer.status_code == 303
    redirect = parse_redirect(answer.headers["location"])
    assert redirect.code and redirect.state == walk.state and redirect.iss == deputy.url


async def test_consent_denied_redirects_access_denied(deputy: RunningDeputy, walk: Walk) -> None:
    """OAuth 2.1 §4.1.2.1 / RFC 9207: Deny → error=access_denied with state and iss, no code."""
    answer = await walk.browser.post(f"{deputy.url}/authorize/consent",
                                     data=walk.consent_form.data(("decision", "deny")))
    assert answer.status_code == 303
    redirect = parse_redirect(answer.headers["location"])
    assert redirect.url.startswith(REDIRECT_URI + "?")
    assert (redirect.error, redirect.code, redirect.state, redirect.iss) == (
        "access_denied", None, walk.state, deputy.url)


@pytest.mark.parametrize("csrf", [None, "wrong-token-" + "x" * 32])
async def test_login_without_valid_csrf_is_403(deputy: RunningDeputy, csrf: str | None) -> None:
    """MCP RS-11 / OAuth 2.1 §7.12 (login CSRF): login POST without or with a wrong csrf_token → 403, no session."""
    client_id = await register(deputy)
    async with httpx.AsyncClient() as browser:
        url = authorization_url(deputy, client_id, "st-login")
        page = await browser.get(url)
        data = parse_form(page.text).data(username="alice", password=PASSWORD)
        if csrf is None:
            del data["csrf_token"]
        else:
            data["csrf_token"] = csrf
        assert_forbidden_page(await browser.post(f"{deputy.url}/authorize/login", data=data))
        assert browser.cookies.get("deputy_session") is None


def assert_no_framing(response: httpx.Response) -> None:
    directives = {}
    for part in response.headers["content-security-policy"].split(";"):
        name, _, value = part.strip().partition(" ")
        directives[name.lower()] = value.strip()
    assert directives["frame-ancestors"] == "'none'"
    assert response.headers["x-frame-options"] == "DENY"


async def test_login_consent_and_error_pages_forbid_framing(deputy: RunningDeputy, walk: Walk) -> None:
    """MCP RS-11 / RFC 9700 §4.16: login, consent, error pages: frame-ancestors 'none', X-Frame-Options DENY."""
    async with httpx.AsyncClient() as http:
        error_page = await http.get(f"{deputy.url}/authorize", params={"client_id": "nobody"})
    assert error_page.status_code == 400
    for page in (walk.login_page, walk.consent_page, error_page):
        assert page.headers["content-type"].startswith("text/html")
        assert_no_framing(page)


def cookie_attributes(header: str) -> tuple[str, dict[str, str]]:
    name_value, *attributes = [part.strip() for part in header.split(";")]
    name = name_value.partition("=")[0]
    parsed = {}
    for attribute in attributes:
        key, _, value = attribute.partition("=")
        parsed[key.lower()] = value
    return name, parsed


async def test_cookies_are_httponly_lax_and_not_secure_on_loopback_http(walk: Walk) -> None:
    """MCP RS-11: cookies HttpOnly + SameSite=Lax; on loopback http neither Secure nor __Host- (else dropped)."""
    set_cookies = walk.login_page.headers.get_list("set-cookie") + walk.login_answer.headers.get_list("set-cookie")
    seen = {}
    for header in set_cookies:
        name, attributes = cookie_attributes(header)
        seen[name] = attributes
    assert sorted(seen) == sorted(COOKIES)
    for name, attributes in seen.items():
        assert "httponly" in attributes, name
        assert attributes.get("samesite", "").lower() == "lax", name
        assert "secure" not in attributes, name
        assert attributes.get("path") == "/", name
        assert not name.startswith("__Host-")
