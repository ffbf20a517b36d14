"""Issue 15: refreshing a user's connection to an upstream with its own authorization server, through
:class:`deputy.connections.service.Connections`, against a real one (oidc-provider, tests/support/upstream_oauth.py)
and on both backends.

Abuse first: a refresh the authorization server refuses breaks the connection (recorded, no token in the record) and
asks her to connect again; many calls racing for a due token make one token request — in one process, and across
two replicas on PostgreSQL; a vault key that does not open her tokens is a clear failure, the connection left as it
is and nothing handed out; a token refused again right after its refresh is not refreshed in a loop. Then: an
authorization server that is away (the token used while valid, then a failure) and refresh-token rotation.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from deputy import clock
from deputy.connections.errors import ConnectionFailed
from deputy.connections.model import ConnectionNeeded, UpstreamTokens
from deputy.connections.refresh import token_digest
from deputy.connections.vault import new_key
from deputy.services import Services
from tests.support.connections_service import (
    PUBLIC_URL,
    Upstream,
    connected,
    data,
    ext,
    new_user,
    principal,
    records,
    sealed_refresh,
    services,
    settings_for,
    vault_key,
    whoami,
)
from tests.support.upstream_oauth import oauth_upstream

__all__ = ["data", "oauth_upstream", "services", "vault_key"]  # the fixtures, used by name below


# --- abuse --------------------------------------------------------------------------------------------------------

async def test_a_refused_refresh_breaks_the_connection_and_asks_her_to_connect_again(
        oauth_upstream: Upstream, services: Services) -> None:
    alice = await new_user(services)
    await connected(oauth_upstream, services, alice)
    store = services.connections.parts.store
    async with store.refreshing(alice, "ext") as held:
        assert held.current is not None  # a refresh token the authorization server never issued
        assert await held.store(dataclasses.replace(held.current, refresh_token=sealed_refresh(
            services, alice, "not-a-refresh-token-it-issued")))
    asked = oauth_upstream[0].token_requests()
    with clock.frozen(clock.wall() + 400):  # due
        needed = await services.connections.headers_for(ext(services), principal(alice))
        assert isinstance(needed, ConnectionNeeded) and needed.reason == "broken"
        assert needed.connect_url == f"{PUBLIC_URL}/connect/ext"
        assert oauth_upstream[0].token_requests() == asked + 1
        row = await store.get(alice, "ext")
        assert row is not None and row.status == "broken"
        broken = [r for r in await records(services, "connection.broken") if r["user"] == alice]
        assert [(r["server"], r["reason"], r.get("error")) for r in broken] == [
            ("ext", "refresh_refused", "invalid_grant")]
        assert "not-a-refresh-token" not in json.dumps(broken)
        # Broken stays broken, without asking the authorization server again.
        again = await services.connections.headers_for(ext(services), principal(alice))
        assert isinstance(again, ConnectionNeeded) and again.reason == "broken"
        assert oauth_upstream[0].token_requests() == asked + 1


async def test_racing_calls_refresh_once(oauth_upstream: Upstream, services: Services) -> None:
    alice = await new_user(services)
    await connected(oauth_upstream, services, alice)
    with clock.frozen(clock.wall() + 400):
        asked = oauth_upstream[0].token_requests()
        answers = await asyncio.gather(*(services.connections.headers_for(ext(services), principal(alice))
                                         for _ in range(20)))
        assert oauth_upstream[0].token_requests() == asked + 1
    assert len({tuple(a) for a in answers if not isinstance(a, ConnectionNeeded)}) == 1
    assert len([r for r in await records(services, "connection.refreshed") if r["user"] == alice]) == 1
    assert await whoami(oauth_upstream[1], answers[0]) == 200


async def test_racing_replicas_refresh_once(oauth_upstream: Upstream, postgres_url: str, tmp_path: Path,
                                            vault_key: str) -> None:
    """Two Deputy processes on one PostgreSQL database (two Services: two in-process locks), each with calls
    racing: one token request, and both hand out the same refreshed token."""
    replicas = [Services.open(settings_for(tmp_path / name, tmp_path / "data", postgres_url, oauth_upstream[1],
                                           vault_key)) for name in ("one", "two")]
    for replica in replicas:
        await replica.start()
    try:
        alice = await new_user(replicas[0])
        await connected(oauth_upstream, replicas[0], alice)
        with clock.frozen(clock.wall() + 400):
            asked = oauth_upstream[0].token_requests()
            answers = await asyncio.gather(*(replica.connections.headers_for(ext(replica), principal(alice))
                                             for _ in range(5) for replica in replicas))
            assert oauth_upstream[0].token_requests() == asked + 1
        assert len({tuple(a) for a in answers if not isinstance(a, ConnectionNeeded)}) == 1
    finally:
        for replica in replicas:
            await replica.close()


async def test_a_vault_key_that_does_not_open_her_tokens_fails_clearly_and_hands_out_nothing(
        oauth_upstream: Upstream, services: Services, url: str, data: Path, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    alice = await new_user(services)
    await connected(oauth_upstream, services, alice)
    swapped = Services.open(settings_for(tmp_path / "swapped", data, url, oauth_upstream[1], new_key()))
    await swapped.start()
    try:
        with caplog.at_level(logging.ERROR, logger="deputy.connections"), pytest.raises(ConnectionFailed) as failed:
            await swapped.connections.headers_for(ext(swapped), principal(alice))
        assert failed.value.reason == "vault_key"
        assert any("vault" in r.getMessage() and alice in r.getMessage() for r in caplog.records)
        row = await swapped.connections.parts.store.get(alice, "ext")
        assert row is not None and row.status == "active"  # the operator's key, not her connection, is wrong
    finally:
        await swapped.close()
    assert not isinstance(await services.connections.headers_for(ext(services), principal(alice)), ConnectionNeeded)


async def test_a_token_refused_right_after_its_refresh_is_not_refreshed_again(
        oauth_upstream: Upstream, services: Services) -> None:
    alice = await new_user(services)
    await connected(oauth_upstream, services, alice)
    first = await services.connections.headers_for(ext(services), principal(alice))
    asked = oauth_upstream[0].token_requests()
    assert await services.connections.refused(ext(services), principal(alice), 401, 'Bearer error="invalid_token"') \
        is None  # refreshed: retry
    assert oauth_upstream[0].token_requests() == asked + 1
    second = await services.connections.headers_for(ext(services), principal(alice))
    assert second != first
    needed = await services.connections.refused(ext(services), principal(alice), 401, 'Bearer error="invalid_token"')
    assert isinstance(needed, ConnectionNeeded) and needed.reason == "broken"
    assert oauth_upstream[0].token_requests() == asked + 1


async def test_a_refusal_of_the_old_token_after_another_calls_refresh_does_not_break_the_connection(
        oauth_upstream: Upstream, services: Services) -> None:
    # Calls in flight at once all carry the old token; the first refusal refreshes. A later refusal of that same old
    # token must not be taken for a refusal of the new one (it broke her connection, under load in CI).
    alice = await new_user(services)
    await connected(oauth_upstream, services, alice)
    old = await authorization(services, alice)
    sent = old.removeprefix("Bearer ")
    asked = oauth_upstream[0].token_requests()
    challenge = 'Bearer error="invalid_token"'
    assert await services.connections.refused(ext(services), principal(alice), 401, challenge, sent=sent) is None
    new = await authorization(services, alice)
    assert new != old
    assert await services.connections.refused(ext(services), principal(alice), 401, challenge, sent=sent) is None
    assert oauth_upstream[0].token_requests() == asked + 1  # the stale refusal asked for no second refresh
    row = await services.connections.parts.store.get(alice, "ext")
    assert row is not None and row.status == "active"
    assert await authorization(services, alice) == new


async def authorization(services: Services, user: str) -> str:
    """The one ``Authorization`` value the connections give ``user``'s next call."""
    headers = await services.connections.headers_for(ext(services), principal(user))
    assert not isinstance(headers, ConnectionNeeded), headers
    [(name, value)] = headers
    assert name == "Authorization"
    return value


# --- behaviour ------------------------------------------------------------------------------------------------------

async def test_an_authorization_server_away_uses_the_token_while_valid_then_fails(
        oauth_upstream: Upstream, services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    alice = await new_user(services)
    await connected(oauth_upstream, services, alice)
    row = await services.connections.parts.store.get(alice, "ext")
    assert row is not None and row.expires_at is not None

    async def away(*_args: Any, **_kwargs: Any) -> UpstreamTokens:
        raise ConnectionFailed("ext", "upstream_unavailable", "connection refused")

    monkeypatch.setattr(services.connections.parts.authorization, "refresh", away)
    margin = services.settings.connections.refresh_margin
    with clock.frozen(row.expires_at - margin + 1):  # due, still valid
        headers = await services.connections.headers_for(ext(services), principal(alice))
        assert not isinstance(headers, ConnectionNeeded) and token_digest(headers[0][1][7:]) == row.token_digest
    with clock.frozen(row.expires_at + 1), pytest.raises(ConnectionFailed) as failed:
        await services.connections.headers_for(ext(services), principal(alice))
    assert failed.value.reason == "upstream_unavailable"
    after = await services.connections.parts.store.get(alice, "ext")
    assert after is not None and after.status == "active"


async def test_rotation_replaces_the_refresh_token_and_none_returned_keeps_the_old(
        oauth_upstream: Upstream, services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    alice = await new_user(services)
    await connected(oauth_upstream, services, alice)
    keeper, store = services.connections.keeper, services.connections.parts.store
    first = await store.get(alice, "ext")
    assert first is not None
    with clock.frozen(clock.wall() + 400):
        await services.connections.headers_for(ext(services), principal(alice))
    rotated = await store.get(alice, "ext")
    assert rotated is not None and rotated.token_digest != first.token_digest
    assert keeper.open(rotated, "refresh_token") != keeper.open(first, "refresh_token")
    refresh = services.connections.parts.authorization.refresh

    async def without_refresh_token(*args: Any, **kwargs: Any) -> UpstreamTokens:
        return dataclasses.replace(await refresh(*args, **kwargs), refresh_token=None)

    monkeypatch.setattr(services.connections.parts.authorization, "refresh", without_refresh_token)
    with clock.frozen(clock.wall() + 800):
        await services.connections.headers_for(ext(services), principal(alice))
    kept = await store.get(alice, "ext")
    assert kept is not None and kept.token_digest != rotated.token_digest
    assert keeper.open(kept, "refresh_token") == keeper.open(rotated, "refresh_token")
