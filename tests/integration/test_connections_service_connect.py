"""Issue 15: a user connecting her account at an upstream with its own authorization server, through
:meth:`deputy.connections.service.Connections.start` and ``finish``, against a real one (oidc-provider,
tests/support/upstream_oauth.py) and on both backends.

Abuse first: a callback in another browser or for another user connects nobody and stores nothing; a replayed
``state`` finds nothing; a token naming no user uses nobody's connection. Then: the subject's connection for an agent
acting for her, and step-up (``insufficient_scope`` asks for the union at the next connect, never for scopes already
granted).
"""

from __future__ import annotations

import json

import pytest

from deputy.act_chain import Actor
from deputy.connections.errors import ConnectionFailed
from deputy.connections.model import ConnectionNeeded
from deputy.policy.user_attributes import NO_USER
from deputy.services import Services
from deputy.storage.connections import StoredClient
from tests.support.connections_service import (
    PUBLIC_URL,
    Upstream,
    approved,
    connected,
    data,
    ext,
    new_user,
    principal,
    query_of,
    records,
    services,
    vault_key,
    whoami,
)
from tests.support.upstream_oauth import oauth_upstream

__all__ = ["data", "oauth_upstream", "services", "vault_key"]  # the fixtures, used by name below


# --- abuse --------------------------------------------------------------------------------------------------------

async def test_a_callback_in_another_browser_connects_nobody_and_leaves_the_flow_to_its_own(
        oauth_upstream: Upstream, services: Services) -> None:
    alice = await new_user(services)
    query = await approved(oauth_upstream, services, alice, "alice's browser")
    with pytest.raises(ConnectionFailed) as refused:
        await services.connections.finish(query, alice, "an attacker's browser", "ext")
    assert refused.value.reason == "state_foreign"
    assert await services.connections.list(alice) == []
    assert await services.connections.finish(query, alice, "alice's browser", "ext") == "ext"  # not spent by the other


async def test_a_callback_for_another_user_stores_nothing_and_spends_the_flow(
        oauth_upstream: Upstream, services: Services) -> None:
    """Alice starts; her callback reaches Deputy while Bob is signed in on that browser: nobody is connected (Bob
    would otherwise hold Alice's upstream account)."""
    alice, bob = await new_user(services), await new_user(services, "bob")
    query = await approved(oauth_upstream, services, alice, "shared browser")
    with pytest.raises(ConnectionFailed) as refused:
        await services.connections.finish(query, bob, "shared browser", "ext")
    assert refused.value.reason == "state_foreign"
    with pytest.raises(ConnectionFailed) as again:
        await services.connections.finish(query, alice, "shared browser", "ext")
    assert again.value.reason == "state_unknown"
    assert await services.connections.list(alice) == [] and await services.connections.list(bob) == []
    assert not [r for r in await records(services, "connection.created") if r["user"] in (alice, bob)]


async def test_a_replayed_state_finds_nothing_and_changes_nothing(oauth_upstream: Upstream,
                                                                  services: Services) -> None:
    alice = await new_user(services)
    query = await approved(oauth_upstream, services, alice, "b")
    await services.connections.finish(query, alice, "b", "ext")
    before = await services.connections.parts.store.get(alice, "ext")
    for presented in (query, {**query, "state": "never-issued"}, {k: v for k, v in query.items() if k != "state"}):
        with pytest.raises(ConnectionFailed) as refused:
            await services.connections.finish(presented, alice, "b", "ext")
        assert refused.value.reason == "state_unknown"
    assert await services.connections.parts.store.get(alice, "ext") == before
    created = [r for r in await records(services, "connection.created") if r["user"] == alice]
    assert len(created) == 1
    assert before is not None and created[0]["token_sha256"] == before.token_digest
    assert query["code"] not in json.dumps(created[0]) and query["state"] not in json.dumps(created[0])


async def test_an_answer_at_another_servers_callback_is_refused_and_nothing_is_redeemed(
        oauth_upstream: Upstream, services: Services) -> None:
    """Mix-up (RFC 9700 §4.4): a code and ext's ``state`` arriving at another server's callback — or at the shared
    one every server used before — is another authorization server's answer for all Deputy can tell: the flow is
    spent, no token endpoint is asked, nobody is connected."""
    alice = await new_user(services)
    for callback in ("other", None):
        query = await approved(oauth_upstream, services, alice, "b")
        asked = oauth_upstream[0].token_requests()
        with pytest.raises(ConnectionFailed) as refused:
            await services.connections.finish(query, alice, "b", callback)
        assert refused.value.reason == "wrong_callback"
        assert oauth_upstream[0].token_requests() == asked
        with pytest.raises(ConnectionFailed) as spent:
            await services.connections.finish(query, alice, "b", "ext")
        assert spent.value.reason == "state_unknown" and oauth_upstream[0].token_requests() == asked
    assert await services.connections.list(alice) == []


async def test_a_flow_is_started_with_ext_own_redirect_uri(oauth_upstream: Upstream, services: Services) -> None:
    alice = await new_user(services)
    url = await services.connections.start("ext", alice, "b")
    assert query_of(url)["redirect_uri"] == f"{PUBLIC_URL}/connect/callback/ext"


async def test_a_client_registered_with_the_shared_redirect_uri_is_registered_again(
        oauth_upstream: Upstream, services: Services) -> None:
    """A row an older version kept (registered with the one shared redirect URI, ``source`` "registered") is not
    presented: Deputy registers again with ext's own redirect URI and replaces it."""
    store = services.connections.parts.store
    issuer = oauth_upstream[0].issuer
    await store.put_registered_client(StoredClient("ext", issuer, "registered-for-the-shared-uri", None, "none",
                                                   "registered", 1))
    url = await services.connections.start("ext", await new_user(services), "b")
    assert query_of(url)["client_id"] != "registered-for-the-shared-uri"
    kept = await store.registered_client("ext", issuer)
    assert kept is not None and kept.client_id == query_of(url)["client_id"] and kept.source != "registered"
    # The new client works: a connection is made with it at ext's own callback.
    await connected(oauth_upstream, services, await new_user(services, "bob"))


async def test_a_token_naming_no_user_uses_nobodys_connection(oauth_upstream: Upstream, services: Services) -> None:
    """Client credentials: ``sub`` is the client. Even a client whose id equals a user's gets no connection."""
    alice = await new_user(services)
    await connected(oauth_upstream, services, alice)
    needed = await services.connections.headers_for(ext(services), principal(alice, attributes=NO_USER))
    assert isinstance(needed, ConnectionNeeded) and needed.reason == "not_connected"
    assert "user must connect" in needed.message


# --- behaviour ------------------------------------------------------------------------------------------------------

async def test_her_connection_carries_her_token_also_for_an_agent_acting_for_her(
        oauth_upstream: Upstream, services: Services) -> None:
    alice, bob = await new_user(services), await new_user(services, "bob")
    needed = await services.connections.headers_for(ext(services), principal(alice))
    assert isinstance(needed, ConnectionNeeded) and needed.reason == "not_connected"
    await connected(oauth_upstream, services, alice)
    own = await services.connections.headers_for(ext(services), principal(alice))
    agent = await services.connections.headers_for(ext(services), principal(alice, actors=(Actor("agent-7"),)))
    assert own == agent and not isinstance(own, ConnectionNeeded)
    assert await whoami(oauth_upstream[1], own) == 200
    bobs = await services.connections.headers_for(ext(services), principal(bob))
    assert isinstance(bobs, ConnectionNeeded) and bobs.reason == "not_connected"
    [summary] = await services.connections.list(alice)
    assert (summary.server, summary.status, summary.issuer) == ("ext", "active", oauth_upstream[0].issuer)
    assert summary.scope is not None and "tools:read" in summary.scope.split()


async def test_insufficient_scope_asks_for_the_union_at_the_next_connect(oauth_upstream: Upstream,
                                                                         services: Services) -> None:
    alice = await new_user(services)
    await connected(oauth_upstream, services, alice)
    challenge = 'Bearer error="insufficient_scope", scope="tools:read tools:admin"'
    needed = await services.connections.refused(ext(services), principal(alice), 403, challenge)
    assert isinstance(needed, ConnectionNeeded) and needed.reason == "insufficient_scope"
    row = await services.connections.parts.store.get(alice, "ext")
    assert row is not None and row.wanted_scope is not None
    assert {"tools:read", "tools:admin"} <= set(row.wanted_scope.split())
    url = await services.connections.start("ext", alice, "b")
    assert {"tools:read", "tools:admin"} <= set(query_of(url)["scope"].split())
    # A 403 that is not about scope is the call's refusal, not the connection's.
    assert await services.connections.refused(ext(services), principal(alice), 403, None) is None


async def test_insufficient_scope_for_scopes_already_granted_does_not_ask_her_again(oauth_upstream: Upstream,
                                                                                   services: Services) -> None:
    # Connecting again would grant nothing new: an upstream that keeps answering insufficient_scope for scopes she
    # granted would send her round in a loop (the conformance suite's auth/scope-retry-limit).
    alice = await new_user(services)
    await connected(oauth_upstream, services, alice)
    row = await services.connections.parts.store.get(alice, "ext")
    assert row is not None and row.scope
    granted = row.scope.split()[0]
    challenge = f'Bearer error="insufficient_scope", scope="{granted}"'
    assert await services.connections.refused(ext(services), principal(alice), 403, challenge) is None
    kept = await services.connections.parts.store.get(alice, "ext")
    assert kept is not None and kept.wanted_scope is None
