"""The connection pages' forms and pages abused (issue 15, item 3), through a running Deputy in front of a real
third-party authorization server (tests/support/connection_pages.py), on both database backends.

Class by class (../shared/reference/attack-classes.md): security headers and methods on every page, unknown servers
and servers without ``credentials = "oauth"``; CSRF on the Connect and Disconnect forms (missing, wrong, another
session's, another form's, another server's, a consent or approval form's, a foreign or ``null`` Origin); login
CSRF, session fixation and a wrong password on the sign-in these pages show; starts bounded per user; XSS through a
server's title. The https-only parts (the client metadata document, ``__Secure-`` cookies) in-process.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from starlette.responses import Response

from deputy.app import create_app
from deputy.config import load_settings
from deputy.web.connection_cookies import ConnectionCookies
from deputy.web.connection_pages import STARTS_PER_MINUTE
from deputy.web.csrf import CsrfTokens
from tests.support.connection_pages import (
    BOB_PASSWORD,
    CAROL_PASSWORD,
    Stack,
    approve,
    assert_protected,
    begin,
    browser,
    connect_form,
    connected,
    disconnect_all,
    sign_in,
    signed_in,
    stack,
)
from tests.support.deputy_process import PASSWORD
from tests.support.sdk_client import page_text, parse_form, parse_forms
from tests.support.upstream_oauth import oauth_upstream

__all__ = ["oauth_upstream", "stack"]  # the module-scope fixtures, used by name below


# -- headers, methods, unknown servers ----------------------------------------------------------


async def test_every_page_forbids_framing_and_caching(stack: Stack) -> None:
    async with browser() as anonymous:
        for path in ("/connect/ext", "/connections", "/connect/nosuch", "/connect/demo", "/connect/callback",
                     "/connect/callback/ext"):
            assert_protected(await anonymous.get(stack.page(path)))
        assert_protected(await anonymous.post(stack.page("/connect/ext"), data={}))
    async with signed_in(stack) as alice:
        for path in ("/connect/ext", "/connections"):
            assert_protected(await alice.get(stack.page(path)))


@pytest.mark.parametrize("path", ["/connect/ext", "/connect/callback", "/connect/callback/ext", "/connections",
                                  "/connect/client-metadata.json"])
async def test_only_get_is_served(stack: Stack, path: str) -> None:
    """HEAD too is refused: Starlette would run the GET handler for it, and a HEAD must spend no callback."""
    async with browser() as http:
        for method in ("HEAD", "PUT", "DELETE", "PATCH"):
            answer = await http.request(method, stack.page(path))
            assert answer.status_code == 405, (method, answer.status_code)


async def test_unknown_servers_and_servers_without_oauth_are_not_found(stack: Stack) -> None:
    async with signed_in(stack) as alice:
        for name in ("nosuch", "demo", "local", "EXT"):
            page = await alice.get(stack.page(f"/connect/{name}"))
            assert page.status_code == 404, name
            assert parse_forms(page.text) == []
        form = await connect_form(stack, alice)  # a good token for ext does not start demo
        started = await alice.post(stack.page("/connect/demo"), data=form)
        assert started.status_code == 404 and "location" not in started.headers
        gone = await alice.post(stack.page("/connections/demo/disconnect"), data=form)
        assert gone.status_code == 404


async def test_no_client_metadata_document_on_an_http_deployment(stack: Stack) -> None:
    async with browser() as http:
        answer = await http.get(stack.page("/connect/client-metadata.json"))
    assert answer.status_code == 404
    assert_protected(answer)


async def test_the_client_metadata_document_is_public_json_on_https(tmp_path: Path) -> None:
    config = tmp_path / "deputy.toml"
    config.write_text(f'public_url = "https://deputy.example.com"\ndata_dir = "{tmp_path / "data"}"\n'
                      f'database_url = "sqlite+aiosqlite:///{tmp_path / "deputy.db"}"\n'
                      '[servers.ext]\nurl = "https://mcp.example.com/mcp"\ncredentials = "oauth"\n')
    app = create_app(load_settings(config, environ={}))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://deputy.example.com") as http:
        answer = await http.get("/connect/client-metadata.json")
        head = await http.head("/connect/client-metadata.json")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["cache-control"].startswith("public, max-age=")
    document = answer.json()
    assert document["client_id"] == "https://deputy.example.com/connect/client-metadata.json"
    assert document["redirect_uris"] == ["https://deputy.example.com/connect/callback/ext"]  # ext's own
    assert head.status_code == 405


def test_the_browser_cookie_is_secure_and_scoped_on_https() -> None:
    cookies = ConnectionCookies(secure=True, flow_ttl=600)
    response = Response()
    cookies.keep_browser(response, "b" * 43)
    cookies.set_notice(response, "connected", "ext")
    browser_cookie, notice = response.headers.getlist("set-cookie")
    assert browser_cookie.startswith("__Secure-deputy_connect=" + "b" * 43)
    for attribute in ("HttpOnly", "Secure", "Path=/connect;", "SameSite=lax", "Max-Age=600"):
        assert attribute in browser_cookie + ";", browser_cookie
    assert notice.startswith("__Secure-deputy_notice=") and "Path=/connections" in notice and "Secure" in notice


# -- CSRF ---------------------------------------------------------------------------------------


async def test_connect_without_a_valid_token_starts_nothing(stack: Stack) -> None:
    async with signed_in(stack) as alice, signed_in(stack, "bob") as bob:
        good = await connect_form(stack, alice)
        bobs = await connect_form(stack, bob)
        hostile = await connect_form(stack, alice, "hostile")  # her token for another server's form
        approval = CsrfTokens.from_data_dir(stack.deputy.data_dir).token("approval", alice.cookies["deputy_session"])
        forged = [({}, None), ({"csrf_token": "x" * 43}, None), (bobs, None), (hostile, None),
                  ({"csrf_token": approval}, None), (good, "https://evil.example"), (good, "null")]
        for data, origin in forged:
            headers = {"Origin": origin} if origin else {}
            answer = await alice.post(stack.page("/connect/ext"), data=data, headers=headers)
            assert answer.status_code == 403, (data, origin, page_text(answer.text))
            assert "location" not in answer.headers
            assert not any("deputy_connect" in c for c in answer.headers.get_list("set-cookie"))
            assert_protected(answer)
        # The good token, from her own page and her own origin, does start (the refusals were the token's).
        answer = await alice.post(stack.page("/connect/ext"), data=good, headers={"Origin": stack.deputy.url})
        assert answer.status_code == 303 and answer.headers["location"].startswith(stack.auth.issuer)


async def test_a_consent_forms_token_neither_starts_nor_ends_a_connection(stack: Stack) -> None:
    """The connect and disconnect forms have CSRF purposes of their own: a token minted for Deputy's consent form
    (even one bound to exactly what the connection forms bind) is refused by both (deputy.web.csrf)."""
    async with signed_in(stack) as alice:
        await alice.get(await approve(stack, await begin(stack, alice)))
        assert await connected(stack, alice)
        tokens = CsrfTokens.from_data_dir(stack.deputy.data_dir)
        session = alice.cookies["deputy_session"]
        for bound in ("connect\x00ext", "disconnect\x00ext", "ext", ""):
            consent = tokens.token("consent", f"{session}\x00{bound}" if bound else session)
            started = await alice.post(stack.page("/connect/ext"), data={"csrf_token": consent})
            assert started.status_code == 403 and "location" not in started.headers, (bound, started.status_code)
            ended = await alice.post(stack.page("/connections/ext/disconnect"), data={"csrf_token": consent})
            assert ended.status_code == 403, (bound, ended.status_code)
        assert await connected(stack, alice)
        await disconnect_all(stack, alice)


def test_connection_tokens_and_consent_tokens_are_not_interchangeable(tmp_path: Path) -> None:
    tokens = CsrfTokens.from_data_dir(tmp_path)
    binding = "session-id\x00ext"
    for purpose in ("connect", "disconnect"):
        assert not tokens.verify("consent", binding, tokens.token(purpose, binding))
        assert not tokens.verify(purpose, binding, tokens.token("consent", binding))
    assert not tokens.verify("connect", binding, tokens.token("disconnect", binding))


async def test_connect_without_a_session_shows_the_sign_in_only(stack: Stack) -> None:
    async with browser() as anonymous:
        page = await anonymous.get(stack.page("/connect/ext"))
        assert page.status_code == 200
        forms = parse_forms(page.text)
        assert [form.action for form in forms] == ["/connect/ext"] and forms[0].has_password()
        # The Connect form's shape (a token, no username) with the only token she holds: the sign-in form's.
        answer = await anonymous.post(stack.page("/connect/ext"), data={"csrf_token": forms[0].fields["csrf_token"]})
        assert answer.status_code == 403 and "location" not in answer.headers


async def test_login_csrf_a_sign_in_from_another_site_signs_nobody_in(stack: Stack) -> None:
    """Signed in to the attacker's account, she would connect her upstream account to it (RFC 9700 §4.7.1)."""
    async with browser() as attacker:
        page = await attacker.get(stack.page("/connect/ext"))
        attackers_token = parse_form(page.text).fields["csrf_token"]
    async with browser() as victim:
        for data in ({}, {"csrf_token": attackers_token}):  # her browser holds no (or another) pre-session
            answer = await victim.post(stack.page("/connect/ext"),
                                       data={**data, "username": "bob", "password": BOB_PASSWORD})
            assert answer.status_code == 403, page_text(answer.text)
            assert "deputy_session" not in victim.cookies
        await victim.get(stack.page("/connect/ext"))  # her own pre-session now; a foreign Origin still fails
        token = parse_form((await victim.get(stack.page("/connect/ext"))).text).fields["csrf_token"]
        answer = await victim.post(stack.page("/connect/ext"), headers={"Origin": "https://evil.example"},
                                   data={"csrf_token": token, "username": "bob", "password": BOB_PASSWORD})
        assert answer.status_code == 403 and "deputy_session" not in victim.cookies


async def test_sign_in_starts_a_new_session_and_the_page_says_whose(stack: Stack) -> None:
    """Session fixation: a session id planted before sign-in is not the one after it. And a session planted whole
    (bob's, say) is visible: the connect page names the Deputy user the account would be connected to."""
    planted = "planted-by-an-attacker-" + "x" * 20
    async with browser() as http:
        http.cookies.set("deputy_session", planted, domain="127.0.0.1", path="/")
        await sign_in(stack, http, "alice", PASSWORD)
        assert http.cookies["deputy_session"] != planted
        assert "Signed in to Deputy as alice" in page_text((await http.get(stack.page("/connect/ext"))).text)
    async with signed_in(stack, "bob") as bob, browser() as victim:
        victim.cookies.set("deputy_session", bob.cookies["deputy_session"], domain="127.0.0.1", path="/")
        assert "Signed in to Deputy as bob" in page_text((await victim.get(stack.page("/connect/ext"))).text)


async def test_a_wrong_password_signs_nobody_in(stack: Stack) -> None:
    async with browser() as http:
        form = parse_form((await http.get(stack.page("/connect/ext"))).text)
        answer = await http.post(stack.page("/connect/ext"), data={**form.fields, "username": "alice",
                                                                   "password": "not her password"})
        assert answer.status_code == 401 and "Wrong username or password." in page_text(answer.text)
        assert "deputy_session" not in http.cookies and parse_form(answer.text).has_password()


async def test_disconnect_without_a_valid_token_disconnects_nothing(stack: Stack) -> None:
    async with signed_in(stack) as alice, signed_in(stack, "bob") as bob:
        await alice.get(await approve(stack, await begin(stack, alice)))
        assert await connected(stack, alice)
        page = await alice.get(stack.page("/connections"))
        good = next(f for f in parse_forms(page.text) if f.action == "/connections/ext/disconnect").fields
        connect_token = await connect_form(stack, alice)  # another form's token, same server and session
        bobs = await connect_form(stack, bob)
        for data, origin in [({}, None), (connect_token, None), (bobs, None), (good, "https://evil.example")]:
            headers = {"Origin": origin} if origin else {}
            answer = await alice.post(stack.page("/connections/ext/disconnect"), data=data, headers=headers)
            assert answer.status_code == 403, (data, origin)
        assert await connected(stack, alice)
        # Bob connects and disconnects his own account at ext: Alice's connection stays.
        await bob.get(await approve(stack, await begin(stack, bob), "bob"))
        assert await connected(stack, bob)
        await disconnect_all(stack, bob)
        assert not await connected(stack, bob) and await connected(stack, alice)
        await disconnect_all(stack, alice)
        assert not await connected(stack, alice)


async def test_starts_are_bounded_per_user_not_for_everyone(stack: Stack) -> None:
    """Each start costs a waiting row and requests to the upstream: a burst from one session is cut off at the limit
    (STARTS_PER_MINUTE, counted per user) with Retry-After, and another user still connects."""
    async with browser() as flooder, signed_in(stack) as alice:
        await sign_in(stack, flooder, "carol", CAROL_PASSWORD)  # her own budget, whatever the other tests spent
        form = await connect_form(stack, flooder)
        answers = [await flooder.post(stack.page("/connect/ext"), data=form) for _ in range(STARTS_PER_MINUTE + 1)]
        statuses = [answer.status_code for answer in answers]
        assert statuses == [303] * STARTS_PER_MINUTE + [429], statuses
        assert int(answers[-1].headers["retry-after"]) >= 1 and "location" not in answers[-1].headers
        assert (await alice.post(stack.page("/connect/ext"), data=await connect_form(stack, alice))).status_code == 303


# -- XSS ----------------------------------------------------------------------------------------


async def test_a_hostile_server_title_is_shown_not_run(stack: Stack) -> None:
    async with browser() as http:
        pages = [await http.get(stack.page("/connect/hostile"))]
        await sign_in(stack, http, "alice", PASSWORD, "hostile")
        pages += [await http.get(stack.page("/connect/hostile")), await http.get(stack.page("/connections"))]
    for page in pages:
        assert "<img src=x" not in page.text, page.text
        assert "Evil &lt;img src=x onerror=alert(1)&gt; &amp; co" in page.text
