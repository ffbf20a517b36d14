"""Issue 15, items 2-5: each user's connection to an upstream with its own authorization server, through
:class:`deputy.connections.service.Connections`, against a real one (oidc-provider, tests/support/upstream_oauth.py)
and on both backends.

Abuse first: a callback in another browser or for another user connects nobody and stores nothing; a replayed
``state`` finds nothing; a refresh the authorization server refuses breaks the connection (recorded, no token in the
record) and asks her to connect again; many calls racing for a due token make one token request — in one process,
and across two replicas on PostgreSQL; a vault key that does not open her tokens is a clear failure, the connection
left as it is and nothing handed out; a token naming no user uses nobody's connection; a token refused again right
after its refresh is not refreshed in a loop. Then: the subject's connection for an agent acting for her, an
authorization server that is away (the token used while valid, then a failure), rotation, step-up, disconnecting
(RFC 7009 at the authorization server, refresh and access token), and disabling her or revoking her consent through
the CLI.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from deputy import clock
from deputy.act_chain import Actor
from deputy.cli import app
from deputy.config import Settings, load_settings
from deputy.connections.errors import ConnectionFailed
from deputy.connections.model import ConnectionNeeded, UpstreamTokens
from deputy.connections.refresh import token_digest
from deputy.connections.vault import new_key
from deputy.gateway.principal import Principal
from deputy.policy.user_attributes import NO_USER, UserAttributes
from deputy.services import Services
from deputy.storage.connections import token_context
from deputy.storage.tables import audit_leaves
from tests.integration.conftest import unique
from tests.support.config_files import config_file
from tests.support.upstream_oauth import ProtectedUpstream, UpstreamAuthServer, oauth_upstream

__all__ = ["oauth_upstream"]  # the module-scope fixture, used by name below

Upstream = tuple[UpstreamAuthServer, ProtectedUpstream]
PUBLIC_URL = "http://127.0.0.1:8765"


def settings_for(directory: Path, data: Path, url: str, upstream: ProtectedUpstream, vault_key: str) -> Settings:
    """A deputy.toml in ``directory``; ``data``, the data directory, is the module's (its audit signing key goes
    with the module's database)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = config_file(directory, (
        f'public_url = "{PUBLIC_URL}"\ndata_dir = "{data}"\ndatabase_url = "{url}"\n\n'
        f'[servers.ext]\nurl = "{upstream.url}"\ncredentials = "oauth"\n'
        f'[servers.ext.oauth]\ntrusted_hosts = ["127.0.0.1"]\n'))
    return load_settings(path, environ={"DEPUTY_VAULT_KEY": vault_key})


@pytest.fixture(scope="module")
def vault_key() -> str:
    return new_key()


@pytest.fixture(scope="module")
def data(url: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture
async def services(url: str, data: Path, tmp_path: Path, oauth_upstream: Upstream, vault_key: str
                   ) -> AsyncIterator[Services]:
    opened = Services.open(settings_for(tmp_path, data, url, oauth_upstream[1], vault_key))
    await opened.start()
    yield opened
    await opened.close()


LOCAL_USER = UserAttributes(idp="local")


def principal(user_id: str, *, attributes: UserAttributes = LOCAL_USER, actors: tuple[Actor, ...] = ()) -> Principal:
    return Principal(user=user_id, agent="some-client", scopes=frozenset({"ext:tools"}), token_id="t",
                     server="ext", actors=actors, user_attributes=attributes)


async def new_user(services: Services, name: str = "alice") -> str:
    return (await services.users.add(unique(name), "a long passphrase")).user_id


def query_of(location: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(location).query))


async def approved(upstream: Upstream, services: Services, user_id: str, browser: str, login: str = "alice"
                   ) -> dict[str, str]:
    """Start connecting ``user_id`` in ``browser`` and sign in at the authorization server as ``login``: the
    callback's query (not yet handed to Deputy)."""
    authorization_url = await services.connections.start("ext", user_id, browser)
    return query_of(await asyncio.to_thread(upstream[0].approve, authorization_url, login))


async def connected(upstream: Upstream, services: Services, user_id: str) -> None:
    browser = unique("browser")
    assert await services.connections.finish(await approved(upstream, services, user_id, browser),
                                             user_id, browser) == "ext"


async def records(services: Services, record_type: str) -> list[dict[str, Any]]:
    async with services.database.engine.connect() as conn:
        rows = (await conn.execute(select(audit_leaves.c.record).order_by(audit_leaves.c.idx))).scalars().all()
    return [r for r in (json.loads(bytes(row)) for row in rows) if r["type"] == record_type]


async def whoami(upstream: ProtectedUpstream, headers: Any) -> int:
    """The status the upstream answers a request carrying ``headers`` (401 without a token it accepts)."""
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.post(upstream.url, headers={**dict(headers), "Accept": "application/json, "
                                   "text/event-stream"}, json={"jsonrpc": "2.0", "id": 1, "method": "initialize",
                                   "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                                              "clientInfo": {"name": "t", "version": "1"}}})
    return answer.status_code


def ext(services: Services) -> Any:
    return services.settings.servers["ext"]


def sealed_refresh(services: Services, user_id: str, token: str) -> bytes:
    assert services.connections.parts.vault is not None
    return services.connections.parts.vault.seal(token, token_context(user_id, "ext", "refresh_token"))


# --- abuse --------------------------------------------------------------------------------------------------------

async def test_a_callback_in_another_browser_connects_nobody_and_leaves_the_flow_to_its_own(
        oauth_upstream: Upstream, services: Services) -> None:
    alice = await new_user(services)
    query = await approved(oauth_upstream, services, alice, "alice's browser")
    with pytest.raises(ConnectionFailed) as refused:
        await services.connections.finish(query, alice, "an attacker's browser")
    assert refused.value.reason == "state_foreign"
    assert await services.connections.list(alice) == []
    assert await services.connections.finish(query, alice, "alice's browser") == "ext"  # not spent by the other


async def test_a_callback_for_another_user_stores_nothing_and_spends_the_flow(
        oauth_upstream: Upstream, services: Services) -> None:
    """Alice starts; her callback reaches Deputy while Bob is signed in on that browser: nobody is connected (Bob
    would otherwise hold Alice's upstream account)."""
    alice, bob = await new_user(services), await new_user(services, "bob")
    query = await approved(oauth_upstream, services, alice, "shared browser")
    with pytest.raises(ConnectionFailed) as refused:
        await services.connections.finish(query, bob, "shared browser")
    assert refused.value.reason == "state_foreign"
    with pytest.raises(ConnectionFailed) as again:
        await services.connections.finish(query, alice, "shared browser")
    assert again.value.reason == "state_unknown"
    assert await services.connections.list(alice) == [] and await services.connections.list(bob) == []
    assert not [r for r in await records(services, "connection.created") if r["user"] in (alice, bob)]


async def test_a_replayed_state_finds_nothing_and_changes_nothing(oauth_upstream: Upstream,
                                                                  services: Services) -> None:
    alice = await new_user(services)
    query = await approved(oauth_upstream, services, alice, "b")
    await services.connections.finish(query, alice, "b")
    before = await services.connections.parts.store.get(alice, "ext")
    for presented in (query, {**query, "state": "never-issued"}, {k: v for k, v in query.items() if k != "state"}):
        with pytest.raises(ConnectionFailed) as refused:
            await services.connections.finish(presented, alice, "b")
        assert refused.value.reason == "state_unknown"
    assert await services.connections.parts.store.get(alice, "ext") == before
    created = [r for r in await records(services, "connection.created") if r["user"] == alice]
    assert len(created) == 1
    assert before is not None and created[0]["token_sha256"] == before.token_digest
    assert query["code"] not in json.dumps(created[0]) and query["state"] not in json.dumps(created[0])


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


async def test_a_token_naming_no_user_uses_nobodys_connection(oauth_upstream: Upstream, services: Services) -> None:
    """Client credentials: ``sub`` is the client. Even a client whose id equals a user's gets no connection."""
    alice = await new_user(services)
    await connected(oauth_upstream, services, alice)
    needed = await services.connections.headers_for(ext(services), principal(alice, attributes=NO_USER))
    assert isinstance(needed, ConnectionNeeded) and needed.reason == "not_connected"
    assert "user must connect" in needed.message


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


async def test_a_disconnect_on_another_replica_is_seen_within_the_revocation_staleness(
        oauth_upstream: Upstream, services: Services, url: str, data: Path, tmp_path: Path, vault_key: str) -> None:
    other = Services.open(settings_for(tmp_path / "other", data, url, oauth_upstream[1], vault_key))
    await other.start()
    try:
        with clock.frozen() as frozen:
            alice = await new_user(services)
            await connected(oauth_upstream, services, alice)
            assert not isinstance(await services.connections.headers_for(ext(services), principal(alice)),
                                  ConnectionNeeded)
            assert await other.connections.disconnect(alice, "ext", "user")
            frozen.advance(services.settings.revocation_max_staleness + 0.1)
            needed = await services.connections.headers_for(ext(services), principal(alice))
            assert isinstance(needed, ConnectionNeeded) and needed.reason == "not_connected"
    finally:
        await other.close()


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


async def test_disconnect_deletes_then_revokes_both_tokens_at_the_authorization_server(
        oauth_upstream: Upstream, services: Services) -> None:
    alice = await new_user(services)
    await connected(oauth_upstream, services, alice)
    row = await services.connections.parts.store.get(alice, "ext")
    assert row is not None
    refresh_digest = token_digest(services.connections.keeper.open(row, "refresh_token"))
    assert await services.connections.disconnect(alice, "ext", "user")
    # oidc-provider revokes the refresh token (and the grant with it); its JWT access tokens it cannot revoke
    # (unsupported_token_type), which Deputy asks anyway and logs.
    assert refresh_digest in oauth_upstream[0].revoked_tokens()
    needed = await services.connections.headers_for(ext(services), principal(alice))
    assert isinstance(needed, ConnectionNeeded) and needed.reason == "not_connected"
    assert not await services.connections.disconnect(alice, "ext", "user")
    [record] = [r for r in await records(services, "connection.revoked") if r["user"] == alice]
    assert (record["reason"], record["upstream_revoked"], record["token_sha256"]) == (
        "user", ["refresh_token"], row.token_digest)


async def test_a_revocation_the_upstream_cannot_take_still_disconnects(
        oauth_upstream: Upstream, services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    alice = await new_user(services)
    await connected(oauth_upstream, services, alice)
    asked: list[str] = []

    async def away(_server: Any, _protection: Any, _client: Any, _token: str, hint: str) -> None:
        asked.append(hint)
        raise ConnectionFailed("ext", "upstream_unavailable", "connection refused")

    monkeypatch.setattr(services.connections.parts.authorization, "revoke", away)
    assert await services.connections.disconnect(alice, "ext", "user")
    assert asked == ["refresh_token", "access_token"]
    assert await services.connections.list(alice) == []
    [record] = [r for r in await records(services, "connection.revoked") if r["user"] == alice]
    assert record["upstream_revoked"] == []


# --- the CLI hooks ------------------------------------------------------------------------------------------------

def cli(config: Path, vault_key: str, *args: str) -> Any:
    return CliRunner().invoke(app, [*args, "--config", str(config)], env={"DEPUTY_VAULT_KEY": vault_key})


def connect_in_own_loop(upstream: Upstream, settings: Settings, name: str) -> tuple[str, str]:
    """A user ``name`` connected (in a loop of its own, as the CLI runs in one): her id and her refresh token's
    digest."""
    async def work() -> tuple[str, str]:
        services = Services.open(settings)
        await services.start()
        try:
            user_id = (await services.users.add(name, "a long passphrase")).user_id
            await services.consents.grant(user_id, "some-client", settings.resource_of("ext"), {"ext:tools"})
            await connected(upstream, services, user_id)
            row = await services.connections.parts.store.get(user_id, "ext")
            assert row is not None
            return user_id, token_digest(services.connections.keeper.open(row, "refresh_token"))
        finally:
            await services.close()
    return asyncio.run(work())


def connections_of(settings: Settings, user_id: str) -> list[Any]:
    async def work() -> list[Any]:
        services = Services.open(settings)
        try:
            return list(await services.connections.list(user_id))
        finally:
            await services.close()
    return asyncio.run(work())


@pytest.mark.parametrize("hook", ["users disable", "consents revoke", "consents revoke --server ext"])
def test_disabling_her_or_revoking_her_consent_revokes_her_connections(
        oauth_upstream: Upstream, url: str, data: Path, tmp_path: Path, vault_key: str, hook: str) -> None:
    settings = settings_for(tmp_path, data, url, oauth_upstream[1], vault_key)
    name = unique("carol")
    user_id, refresh_digest = connect_in_own_loop(oauth_upstream, settings, name)
    args = {"users disable": ["users", "disable", name],
            "consents revoke": ["consents", "revoke", "--user", name, "--client", "some-client"],
            "consents revoke --server ext": ["consents", "revoke", "--user", name, "--client", "some-client",
                                             "--server", "ext"]}[hook]
    result = cli(tmp_path / "deputy.toml", vault_key, *args)
    assert result.exit_code == 0, result.output
    assert "1 upstream connection(s)" in result.output
    assert connections_of(settings, user_id) == []
    assert refresh_digest in oauth_upstream[0].revoked_tokens()
