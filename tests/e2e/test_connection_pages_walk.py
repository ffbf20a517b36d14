"""The connection pages walked as a person uses them (issue 15, item 3), through a running Deputy in front of a real
third-party authorization server (tests/support/connection_pages.py), on both database backends: sign in, connect,
the authorization server's login and consent, the callback, listed once-noticed, disconnected (revoked at the
upstream, RFC 7009); a broken connection offers Reconnect; the connections page signs her in and comes back.
"""

from __future__ import annotations

from urllib.parse import urljoin

from sqlalchemy import update

from deputy.storage.db import Database
from deputy.storage.tables import upstream_connections
from tests.support.connection_pages import (
    Stack,
    approve,
    assert_protected,
    begin,
    browser,
    connect_form,
    connected,
    connections,
    disconnect_all,
    sign_in,
    signed_in,
    stack,
)
from tests.support.deputy_process import PASSWORD
from tests.support.sdk_client import page_text, parse_form, parse_forms
from tests.support.upstream_oauth import oauth_upstream

__all__ = ["oauth_upstream", "stack"]  # the module-scope fixtures, used by name below


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
