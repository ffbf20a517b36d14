"""The connection pages (issue 15, item 3) through a running Deputy, a real third-party authorization server
(npm oidc-provider) and the MCP server that accepts only its tokens (tests/support/upstream_oauth.py).

Abuse first, class by class (../shared/reference/attack-classes.md): security headers and methods on every page,
unknown servers, CSRF on both forms (missing, wrong, another session's, another form's, a foreign Origin), login
CSRF and session fixation on the sign-in these pages show, open redirects, XSS through a server title and
through the upstream's error and error_description, a replayed state, a callback in another browser, in another
user's browser, or after another user signed in to the same browser; then the whole walk: sign in, connect, the
authorization server's login and consent, the callback, listed, disconnected (revoked at the upstream). Both
database backends.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import httpx
import pytest
from sqlalchemy import update
from starlette.responses import Response

from deputy.app import create_app
from deputy.config import load_settings
from deputy.storage.db import Database
from deputy.storage.tables import upstream_connections
from deputy.web.connection_cookies import ConnectionCookies
from deputy.web.connection_pages import STARTS_PER_MINUTE
from deputy.web.csrf import CsrfTokens
from tests.support.databases import database_url
from tests.support.deputy_process import PASSWORD, RunningDeputy, running_deputy
from tests.support.sdk_client import page_text, parse_form, parse_forms
from tests.support.upstream_oauth import ProtectedUpstream, UpstreamAuthServer, upstream_oauth

BOB_PASSWORD = "bob's own long passphrase"
CAROL_PASSWORD = "carol only floods the connect button"
HOSTILE_TITLE = "Evil <img src=x onerror=alert(1)> & co"
NOT_THIS_BROWSER = "This link is not for this browser or was already used"


@dataclass(frozen=True)
class Stack:
    deputy: RunningDeputy
    auth: UpstreamAuthServer
    upstream: ProtectedUpstream

    def page(self, path: str) -> str:
        return f"{self.deputy.url}{path}"


@pytest.fixture(scope="module")
def oauth_pair() -> Iterator[tuple[UpstreamAuthServer, ProtectedUpstream]]:
    with upstream_oauth() as pair:
        yield pair


@pytest.fixture(scope="module")
def stack(backend: str, upstream_url: str, oauth_pair: tuple[UpstreamAuthServer, ProtectedUpstream],
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    auth, upstream = oauth_pair
    directory = tmp_path_factory.mktemp(f"deputy-connect-{backend}")
    extra = f'''
[servers.ext]
title = "Ext Tools"
url = "{upstream.url}"
credentials = "oauth"
[servers.ext.oauth]
trusted_hosts = ["127.0.0.1"]

[servers.hostile]
title = "{HOSTILE_TITLE}"
url = "{upstream.url}"
credentials = "oauth"
[servers.hostile.oauth]
trusted_hosts = ["127.0.0.1"]
'''
    users = (("bob", BOB_PASSWORD), ("carol", CAROL_PASSWORD))
    with (database_url(backend, directory) as url,
          running_deputy(directory, url, upstream_url, extra, users=users) as deputy):
        yield Stack(deputy, auth, upstream)


def assert_protected(response: httpx.Response) -> None:
    """The headers every page and redirect of Deputy's carries: no framing, no caching."""
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"], response.headers
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["cache-control"] == "no-store"


@asynccontextmanager
async def browser() -> AsyncIterator[httpx.AsyncClient]:
    """A cookie-keeping client that never follows redirects (each step is asserted)."""
    async with httpx.AsyncClient(timeout=30, follow_redirects=False) as http:
        yield http


async def sign_in(stack: Stack, http: httpx.AsyncClient, username: str, password: str,
                  server: str = "ext") -> None:
    """Through the connect page's own sign-in form, as a person would."""
    page = await http.get(stack.page(f"/connect/{server}"))
    assert page.status_code == 200 and "Sign in" in page.text, page_text(page.text)
    form = parse_form(page.text)
    answer = await http.post(urljoin(stack.deputy.url, form.action),
                             data={**form.fields, "username": username, "password": password})
    assert answer.status_code == 303, page_text(answer.text)
    assert answer.headers["location"] == f"/connect/{server}"


@asynccontextmanager
async def signed_in(stack: Stack, username: str = "alice") -> AsyncIterator[httpx.AsyncClient]:
    async with browser() as http:
        await sign_in(stack, http, username, PASSWORD if username == "alice" else BOB_PASSWORD)
        yield http


async def connect_form(stack: Stack, http: httpx.AsyncClient, server: str = "ext") -> dict[str, str]:
    page = await http.get(stack.page(f"/connect/{server}"))
    assert page.status_code == 200, page_text(page.text)
    form = parse_form(page.text)
    assert form.action == f"/connect/{server}" and not form.has_password()
    return form.fields


async def begin(stack: Stack, http: httpx.AsyncClient, server: str = "ext") -> str:
    """Press Connect: the authorization URL at the upstream's authorization server."""
    answer = await http.post(stack.page(f"/connect/{server}"), data=await connect_form(stack, http, server))
    assert answer.status_code == 303, page_text(answer.text)
    assert_protected(answer)
    location = answer.headers["location"]
    assert location.startswith(f"{stack.auth.issuer}/"), location
    return location


async def approve(stack: Stack, authorization_url: str, login: str = "alice", *, consent: bool = True) -> str:
    """The authorization server's login and consent pages, walked; Deputy's callback URL (not yet opened)."""
    callback = await asyncio.to_thread(stack.auth.approve, authorization_url, login, consent=consent)
    assert callback.startswith(stack.page("/connect/callback?")), callback
    return callback


async def connections(stack: Stack, http: httpx.AsyncClient) -> str:
    page = await http.get(stack.page("/connections"))
    assert page.status_code == 200, page_text(page.text)
    assert_protected(page)
    return page_text(page.text)


async def connected(stack: Stack, http: httpx.AsyncClient) -> bool:
    """Whether the signed-in user of ``http`` holds a connection to ext (its Disconnect form is on her page)."""
    page = await http.get(stack.page("/connections"))
    return any(form.action == "/connections/ext/disconnect" for form in parse_forms(page.text))


async def disconnect_all(stack: Stack, http: httpx.AsyncClient) -> None:
    page = await http.get(stack.page("/connections"))
    for form in parse_forms(page.text):
        if form.action.endswith("/disconnect"):
            answer = await http.post(stack.page(form.action), data=form.fields)
            assert answer.status_code == 303


def refused_not_this_browser(response: httpx.Response) -> None:
    assert response.status_code == 400, page_text(response.text)
    assert NOT_THIS_BROWSER in page_text(response.text)
    assert "location" not in response.headers
    assert_protected(response)


# -- headers, methods, unknown servers ----------------------------------------------------------


async def test_every_page_forbids_framing_and_caching(stack: Stack) -> None:
    async with browser() as anonymous:
        for path in ("/connect/ext", "/connections", "/connect/nosuch", "/connect/demo", "/connect/callback"):
            assert_protected(await anonymous.get(stack.page(path)))
        assert_protected(await anonymous.post(stack.page("/connect/ext"), data={}))
    async with signed_in(stack) as alice:
        for path in ("/connect/ext", "/connections"):
            assert_protected(await alice.get(stack.page(path)))


@pytest.mark.parametrize("path", ["/connect/ext", "/connect/callback", "/connections",
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
    assert document["redirect_uris"] == ["https://deputy.example.com/connect/callback"]
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


# -- open redirects, XSS ------------------------------------------------------------------------


async def test_redirects_go_only_to_fixed_paths(stack: Stack) -> None:
    async with browser() as http:
        page = await http.get(stack.page("/connect/ext"))
        form = parse_form(page.text)
        answer = await http.post(stack.page("/connect/ext?next=https://evil.example/"),
                                 data={**form.fields, "username": "alice", "password": PASSWORD,
                                       "next": "https://evil.example/", "redirect_uri": "https://evil.example/"})
        assert answer.status_code == 303 and answer.headers["location"] == "/connect/ext"
        callback = await approve(stack, await begin(stack, http))
        evil = callback + "&" + urlencode({"next": "https://evil.example/", "redirect_uri": "//evil.example"})
        done = await http.get(evil)
        assert done.status_code == 303, page_text(done.text)
        assert done.headers["location"] == "/connections"
        failed = await http.get(evil)  # replayed: an error page, no redirect anywhere
        assert "location" not in failed.headers
        links = failed.text.split('href="')[1:]
        assert links and all(link.startswith("/") and not link.startswith("//") for link in links), links
        await disconnect_all(stack, http)


async def test_a_hostile_server_title_is_shown_not_run(stack: Stack) -> None:
    async with browser() as http:
        pages = [await http.get(stack.page("/connect/hostile"))]
        await sign_in(stack, http, "alice", PASSWORD, "hostile")
        pages += [await http.get(stack.page("/connect/hostile")), await http.get(stack.page("/connections"))]
    for page in pages:
        assert "<img src=x" not in page.text, page.text
        assert "Evil &lt;img src=x onerror=alert(1)&gt; &amp; co" in page.text


async def test_the_upstreams_error_is_shown_escaped_and_connects_nobody(stack: Stack) -> None:
    async with signed_in(stack) as alice:
        authorization = await begin(stack, alice)
        state = parse_qs(urlsplit(authorization).query)["state"][0]
        error = "<script>alert(1)</script>"
        description = "<img src=x onerror=alert(2)>"
        answer = await alice.get(stack.page("/connect/callback?" + urlencode({
            "error": error, "error_description": description, "state": state, "iss": stack.auth.issuer})))
        assert answer.status_code == 400, page_text(answer.text)
        assert error not in answer.text and "<img src=x" not in answer.text
        # Shown as text: the description escaped; the code as the service keeps it (a bad one replaced).
        assert "&lt;img src=x onerror=alert(2)&gt;" in answer.text, page_text(answer.text)
        assert "did not authorize the connection. It answered" in page_text(answer.text)
        assert_protected(answer)
        assert not await connected(stack, alice)


async def test_a_denied_consent_is_a_clear_page(stack: Stack) -> None:
    async with signed_in(stack) as alice:
        callback = await approve(stack, await begin(stack, alice), consent=False)
        answer = await alice.get(callback)
        assert answer.status_code == 400
        text = page_text(answer.text)
        assert "access_denied" in text and "authorization_denied" in text and "Ext Tools" in text
        assert not await connected(stack, alice)


# -- state: replayed, foreign browser, other user -----------------------------------------------


async def test_a_replayed_callback_connects_nothing_more(stack: Stack) -> None:
    async with signed_in(stack) as alice:
        callback = await approve(stack, await begin(stack, alice))
        assert (await alice.get(callback)).status_code == 303
        assert "Connected to Ext Tools." in await connections(stack, alice)
        text = await connections(stack, alice)
        refused_not_this_browser(await alice.get(callback))
        assert await connections(stack, alice) == text  # the same one connection, still active
        await disconnect_all(stack, alice)


async def test_a_callback_in_another_browser_connects_nobody(stack: Stack) -> None:
    async with signed_in(stack) as alice, signed_in(stack) as alice_elsewhere:
        callback = await approve(stack, await begin(stack, alice))
        refused_not_this_browser(await alice_elsewhere.get(callback))
        assert not await connected(stack, alice_elsewhere) and not await connected(stack, alice)


async def test_a_callback_in_another_users_browser_connects_nobody(stack: Stack) -> None:
    """Bob lured to Alice's callback (or she to his): neither of them is connected, to either account."""
    async with signed_in(stack) as alice, signed_in(stack, "bob") as bob:
        callback = await approve(stack, await begin(stack, alice))
        refused_not_this_browser(await bob.get(callback))
        assert not await connected(stack, bob) and not await connected(stack, alice)
        callback = await approve(stack, await begin(stack, bob), "bob")
        refused_not_this_browser(await alice.get(callback))
        assert not await connected(stack, bob) and not await connected(stack, alice)


async def test_a_callback_after_another_user_signed_in_to_the_same_browser_connects_nobody(stack: Stack) -> None:
    async with signed_in(stack) as shared:
        callback = await approve(stack, await begin(stack, shared))
        shared.cookies.delete("deputy_session")  # her session ended; bob signs in to the same browser
        await sign_in(stack, shared, "bob", BOB_PASSWORD)
        refused_not_this_browser(await shared.get(callback))
        assert not await connected(stack, shared)
    async with signed_in(stack) as alice:
        assert not await connected(stack, alice)


async def test_a_callback_without_a_session_connects_nobody(stack: Stack) -> None:
    async with signed_in(stack) as alice, browser() as anonymous:
        callback = await approve(stack, await begin(stack, alice))
        for cookie in alice.cookies.jar:  # this browser's binding, but nobody signed in
            if cookie.name == "deputy_connect":
                anonymous.cookies.set(cookie.name, cookie.value or "", domain=cookie.domain, path=cookie.path)
        refused_not_this_browser(await anonymous.get(callback))
        assert not await connected(stack, alice)


async def test_a_callback_repeating_a_parameter_is_refused(stack: Stack) -> None:
    async with signed_in(stack) as alice:
        callback = await approve(stack, await begin(stack, alice))
        state = parse_qs(urlsplit(callback).query)["state"][0]
        answer = await alice.get(callback + "&" + urlencode({"state": state}))
        assert answer.status_code == 400 and "repeats a parameter" in page_text(answer.text)
        assert not await connected(stack, alice)


# -- the happy path -----------------------------------------------------------------------------


async def test_alice_connects_sees_and_disconnects_her_account(stack: Stack) -> None:
    async with browser() as alice:
        page = await alice.get(stack.page("/connect/ext"))  # from the gateway's connect_url, not signed in
        assert "Sign in to connect your account at Ext Tools" in page_text(page.text)
        await sign_in(stack, alice, "alice", PASSWORD)
        text = page_text((await alice.get(stack.page("/connect/ext"))).text)
        assert "Connect your account at Ext Tools?" in text and "encrypted" in text
        assert "/connections" in (await alice.get(stack.page("/connect/ext"))).text  # where she disconnects
        started = await alice.post(stack.page("/connect/ext"), data=await connect_form(stack, alice))
        binding = [c for c in started.headers.get_list("set-cookie") if c.startswith("deputy_connect=")]
        assert len(binding) == 1 and "HttpOnly" in binding[0] and "Path=/connect;" in binding[0] + ";"
        assert "samesite=lax" in binding[0].lower() and "Secure" not in binding[0]  # loopback http
        callback = await approve(stack, started.headers["location"])
        done = await alice.get(callback)
        assert done.status_code == 303 and done.headers["location"] == "/connections", page_text(done.text)
        assert_protected(done)

        text = await connections(stack, alice)
        assert "Connected to Ext Tools." in text
        assert "Ext Tools" in text and "active" in text and "tools:read" in text and stack.auth.issuer in text
        again = await connections(stack, alice)
        assert "Connected to Ext Tools." not in again, "the notice is shown once"
        page = await alice.get(stack.page("/connect/ext"))
        assert "You are connected already" in page_text(page.text)
        assert stack.auth.issuer in page_text(page.text)  # now Deputy knows where it sends her

        async with signed_in(stack, "bob") as bob:
            assert "Ext Tools" not in (await connections(stack, bob)).split("Not connected")[0]
            assert not await connected(stack, bob)

        revoked = len(stack.auth.revoked_tokens())
        page = await alice.get(stack.page("/connections"))
        form = next(f for f in parse_forms(page.text) if f.action == "/connections/ext/disconnect")
        gone = await alice.post(stack.page(form.action), data=form.fields)
        assert gone.status_code == 303 and gone.headers["location"] == "/connections"
        text = await connections(stack, alice)
        assert "Disconnected from Ext Tools." in text and not await connected(stack, alice)
        assert len(stack.auth.revoked_tokens()) > revoked, "disconnecting revokes at the upstream (RFC 7009)"
        repeated = await alice.post(stack.page(form.action), data=form.fields)  # the same form, once more
        assert repeated.status_code == 303
        assert "You were not connected to Ext Tools." in await connections(stack, alice)


async def test_a_broken_connection_offers_reconnecting(stack: Stack) -> None:
    """A refresh the upstream refused marks it broken (deputy.connections): her page says so and links back."""
    async with signed_in(stack) as alice:
        await alice.get(await approve(stack, await begin(stack, alice)))
        database = Database(stack.deputy.database_url)
        try:
            async with database.engine.begin() as conn:
                await conn.execute(update(upstream_connections).where(upstream_connections.c.server == "ext")
                                   .values(status="broken"))
        finally:
            await database.dispose()
        page = await alice.get(stack.page("/connections"))
        assert "broken — Reconnect" in page_text(page.text)
        assert '<a href="/connect/ext">Reconnect</a>' in page.text
        assert "Your connection stopped working" in page_text((await alice.get(stack.page("/connect/ext"))).text)
        await alice.get(await approve(stack, await begin(stack, alice)))  # reconnecting replaces it
        text = await connections(stack, alice)
        assert "active" in text and "broken" not in text
        await disconnect_all(stack, alice)


async def test_the_connections_page_signs_her_in_and_comes_back(stack: Stack) -> None:
    async with browser() as http:
        page = await http.get(stack.page("/connections"))
        assert page.status_code == 200 and "Sign in to see the accounts you connected" in page_text(page.text)
        form = parse_form(page.text)
        answer = await http.post(urljoin(stack.deputy.url, form.action),
                                 data={**form.fields, "username": "alice", "password": PASSWORD})
        assert answer.status_code == 303 and answer.headers["location"] == "/connections"
        text = await connections(stack, http)
        assert "Your connections" in text and "Ext Tools — Connect" in text
