"""The connection callback abused (issue 15, item 3; RFC 6749 §4.1.2, §10.12), through a running Deputy in front of a
real third-party authorization server (tests/support/connection_pages.py), on both database backends.

Open redirects (the sign-in and the callback go only to fixed paths, whatever the query names), XSS through the
upstream's ``error`` and ``error_description``, a refused consent, then the ``state``: replayed, opened in another
browser, in another user's browser, after another user signed in to the same browser, without a session, and with a
repeated parameter. Each connects nobody.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlencode, urlsplit

from tests.support.connection_pages import (
    BOB_PASSWORD,
    Stack,
    approve,
    assert_protected,
    begin,
    browser,
    connected,
    connections,
    disconnect_all,
    refused_not_this_browser,
    sign_in,
    signed_in,
    stack,
)
from tests.support.deputy_process import PASSWORD
from tests.support.sdk_client import page_text, parse_form, parse_forms
from tests.support.upstream_oauth import oauth_upstream

__all__ = ["oauth_upstream", "stack"]  # the module-scope fixtures, used by name below


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


async def test_the_upstreams_error_is_shown_escaped_and_connects_nobody(stack: Stack) -> None:
    async with signed_in(stack) as alice:
        authorization = await begin(stack, alice)
        state = parse_qs(urlsplit(authorization).query)["state"][0]
        error = "<script>alert(1)</script>"
        description = "<img src=x onerror=alert(2)>"
        answer = await alice.get(stack.page("/connect/callback/ext?" + urlencode({
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


async def test_an_answer_at_another_servers_callback_is_refused_and_redeems_nothing(stack: Stack) -> None:
    """Mix-up (RFC 9700 §4.4.2): each upstream has its own redirect URI. An answer carrying the ``state`` of
    Alice's flow for ``hostile`` that arrives at ``ext``'s callback (or at the shared one older versions used for
    every server) is another authorization server's for all Deputy can tell: refused, the flow spent, no token
    endpoint asked, nobody connected."""
    async with signed_in(stack) as alice:
        for elsewhere in ("/connect/callback/ext", "/connect/callback"):
            callback = await approve(stack, await begin(stack, alice, "hostile"), server="hostile")
            assert urlsplit(callback).path == "/connect/callback/hostile"
            asked = stack.auth.token_requests()
            answer = await alice.get(stack.page(elsewhere + "?" + urlsplit(callback).query))
            assert answer.status_code == 502, page_text(answer.text)
            assert "wrong_callback" in page_text(answer.text) and "location" not in answer.headers
            assert_protected(answer)
            refused_not_this_browser(await alice.get(callback))  # spent: not redeemable at its own callback either
            assert stack.auth.token_requests() == asked
        page = await alice.get(stack.page("/connections"))
        assert not [form for form in parse_forms(page.text) if form.action.endswith("/disconnect")]


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
