"""Issue 15, item 2 and 3 (storage), on both backends: upstream connections, Deputy's clients at upstream
authorization servers, connections waiting for the callback, single-flight refresh, re-sealing under a new key.

Abuse first: a started connection's ``state`` presented from another browser neither connects nor spends it, is
used once however many replicas race, and not after it expires; tokens are never in the database in clear, and a
sealed token copied to another user's row does not open there; two replicas refreshing the same connection
refresh it once, and a refresh stuck on another replica is waited for a bounded time.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import select, text, update

from deputy.clock import now
from deputy.connections.vault import Vault, VaultKeyError, reseal_all
from deputy.handles import new_handle
from deputy.storage.connections import (
    ConnectionRepository,
    RefreshBusy,
    StoredClient,
    StoredConnection,
    WaitingConnection,
    client_secret_context,
    token_context,
)
from deputy.storage.db import Database
from deputy.storage.tables import connection_flows, upstream_clients, upstream_connections
from deputy.storage.users import UserRepository
from tests.integration.conftest import unique
from tests.support.eventually import eventually

OLD_KEY, NEW_KEY = bytes(range(32)), bytes(range(32, 64))
ISSUER = "https://github.com/login/oauth"


@pytest.fixture
def repo(db: Database) -> ConnectionRepository:
    return ConnectionRepository(db.engine, refresh_wait=10)


async def new_user(db: Database) -> str:
    return (await UserRepository(db.engine).add(unique("u"), "pw")).user_id


def sealed_connection(vault: Vault, user_id: str, server: str, access: str, refresh: str | None = "rt",
                      expires_at: int | None = None) -> StoredConnection:
    return StoredConnection(
        user_id=user_id, server=server, status="active", issuer=ISSUER, client_id="deputy", scope="repo",
        wanted_scope=None, access_token=vault.seal(access, token_context(user_id, server, "access_token")),
        refresh_token=(vault.seal(refresh, token_context(user_id, server, "refresh_token"))
                       if refresh is not None else None),
        expires_at=expires_at, created_at=now(), refreshed_at=None, token_digest="d" * 64)


# -- connections waiting for the callback ---------------------------------------------------------------------------

async def test_state_from_another_browser_neither_connects_nor_spends_it(repo: ConnectionRepository,
                                                                        db: Database) -> None:
    user = await new_user(db)
    state, browser = new_handle(), new_handle()
    await repo.add_flow(state, browser, user, "github", {"code_verifier": "v"}, now() + 600)
    assert await repo.take_flow(state, new_handle()) == "foreign"
    assert await repo.take_flow(state, None) == "foreign"
    assert await repo.take_flow(state, browser) == WaitingConnection(user, "github", {"code_verifier": "v"})
    assert await repo.take_flow(state, browser) == "unknown"  # used once
    assert await repo.take_flow(new_handle(), browser) == "unknown"


async def test_expired_state_is_unknown_and_purged(repo: ConnectionRepository, db: Database) -> None:
    user = await new_user(db)
    state, browser = new_handle(), new_handle()
    await repo.add_flow(state, browser, user, "github", {}, now() - 1)
    assert await repo.take_flow(state, browser) == "unknown"
    assert await repo.purge_expired_flows() >= 1
    async with db.engine.connect() as conn:
        assert (await conn.execute(select(connection_flows).where(
            connection_flows.c.user_id == user))).first() is None


async def test_state_and_browser_are_kept_only_as_digests(repo: ConnectionRepository, db: Database) -> None:
    user = await new_user(db)
    state, browser = new_handle(), new_handle()
    await repo.add_flow(state, browser, user, "github", {"server": "github"}, now() + 600)
    async with db.engine.connect() as conn:
        row = (await conn.execute(select(connection_flows).where(connection_flows.c.user_id == user))).one()
    assert state not in repr(tuple(row)) and browser not in repr(tuple(row))


async def test_state_raced_from_many_tasks_is_taken_once(repo: ConnectionRepository, db: Database,
                                                         url: str) -> None:
    """Two engines (replicas), ten takers each: one gets the connection."""
    user = await new_user(db)
    state, browser = new_handle(), new_handle()
    await repo.add_flow(state, browser, user, "github", {}, now() + 600)
    other = Database(url)
    try:
        replicas = (repo, ConnectionRepository(other.engine))
        results = await asyncio.gather(*(replicas[i % 2].take_flow(state, browser) for i in range(20)))
    finally:
        await other.dispose()
    assert sum(isinstance(r, WaitingConnection) for r in results) == 1
    assert all(r == "unknown" for r in results if not isinstance(r, WaitingConnection))


# -- tokens at rest -------------------------------------------------------------------------------------------------

async def test_tokens_are_never_stored_in_clear(repo: ConnectionRepository, db: Database) -> None:
    user = await new_user(db)
    vault = Vault([OLD_KEY])
    await repo.put(sealed_connection(vault, user, "github", "gho_ACCESS-secret-1", "ghr_REFRESH-secret-1"))
    await repo.put_registered_client(StoredClient("github", ISSUER, "cid", vault.seal(
        "client-SECRET-1", client_secret_context("github", ISSUER)), "client_secret_basic", "registered", now()))
    async with db.engine.connect() as conn:
        everything = repr((await conn.execute(select(upstream_connections))).all()) + repr(
            (await conn.execute(select(upstream_clients))).all())
    for secret in ("gho_ACCESS-secret-1", "ghr_REFRESH-secret-1", "client-SECRET-1"):
        assert secret not in everything and secret.encode().hex() not in everything


async def test_token_copied_to_another_users_row_does_not_open(repo: ConnectionRepository, db: Database) -> None:
    """Someone with write access to the database moves Alice's sealed token into Bob's row: it opens for nobody."""
    alice, bob = await new_user(db), await new_user(db)
    vault = Vault([OLD_KEY])
    await repo.put(sealed_connection(vault, alice, "github", "alice-token"))
    await repo.put(sealed_connection(vault, bob, "github", "bob-token"))
    stolen = await repo.get(alice, "github")
    assert stolen is not None
    async with db.engine.begin() as conn:
        await conn.execute(update(upstream_connections).where(upstream_connections.c.user_id == bob).values(
            access_token=stolen.access_token))
    moved = await repo.get(bob, "github")
    assert moved is not None
    with pytest.raises(VaultKeyError):
        vault.unseal(moved.access_token, token_context(bob, "github", "access_token"))
    done = await reseal_all(Vault([NEW_KEY, OLD_KEY]), repo)
    assert done.unreadable >= 1  # re-sealing does not launder it either


# -- connections ----------------------------------------------------------------------------------------------------

async def test_put_get_reconnect_and_state_changes(repo: ConnectionRepository, db: Database) -> None:
    user = await new_user(db)
    vault = Vault([OLD_KEY])
    first = await repo.put(sealed_connection(vault, user, "github", "one"))
    assert first.version == 1 and await repo.get(user, "github") == first
    again = await repo.put(dataclasses.replace(sealed_connection(vault, user, "github", "two"), status="active"))
    assert again.version == 2
    assert vault.unseal(again.access_token, token_context(user, "github", "access_token")) == "two"
    assert await repo.set_wanted_scope(user, "github", "repo admin:org")
    assert await repo.mark_broken(user, "github")
    broken = await repo.get(user, "github")
    assert broken is not None and (broken.status, broken.wanted_scope, broken.version) == ("broken", "repo admin:org",
                                                                                          4)
    assert not await repo.mark_broken(user, "linear") and not await repo.set_wanted_scope(user, "linear", "x")


async def test_delete_returns_the_row_once(repo: ConnectionRepository, db: Database) -> None:
    user = await new_user(db)
    vault = Vault([OLD_KEY])
    stored = await repo.put(sealed_connection(vault, user, "github", "one"))
    results = await asyncio.gather(*(repo.delete(user, "github") for _ in range(5)))
    assert [r for r in results if r is not None] == [stored]
    assert await repo.get(user, "github") is None


async def test_delete_for_user_and_list_filters(repo: ConnectionRepository, db: Database) -> None:
    alice, bob = await new_user(db), await new_user(db)
    vault = Vault([OLD_KEY])
    for user, server in ((alice, "github"), (alice, "linear"), (bob, "github")):
        await repo.put(sealed_connection(vault, user, server, f"{user}-{server}"))
    assert [c.server for c in await repo.list(user_id=alice)] == ["github", "linear"]
    assert {c.user_id for c in await repo.list(server="github")} >= {alice, bob}
    assert [c.user_id for c in await repo.list(user_id=bob, server="linear")] == []
    assert [c.server for c in await repo.delete_for_user(alice)] == ["github", "linear"]
    assert await repo.list(user_id=alice) == [] and len(await repo.list(user_id=bob)) == 1


async def test_registered_client_upsert(repo: ConnectionRepository) -> None:
    server = unique("s")
    assert await repo.registered_client(server, ISSUER) is None
    await repo.put_registered_client(StoredClient(server, ISSUER, "one", None, "none", "registered", 1))
    await repo.put_registered_client(StoredClient(server, ISSUER, "two", b"x", "client_secret_post", "registered", 2))
    assert await repo.registered_client(server, ISSUER) == StoredClient(server, ISSUER, "two", b"x",
                                                                        "client_secret_post", "registered", 2)


# -- single flight ------------------------------------------------------------------------------------------------

async def refresh_once(repo: ConnectionRepository, user: str, refreshes: list[str], vault: Vault,
                       gate: asyncio.Event | None = None, entered: asyncio.Event | None = None) -> None:
    """What the service does: under the hold, refresh only if the row read there is still due."""
    async with repo.refreshing(user, "github") as held:
        assert held.current is not None
        if held.current.expires_at is not None and held.current.expires_at > now() + 60:
            return  # the one before refreshed it
        refreshes.append(user)
        if entered is not None:
            entered.set()
        if gate is not None:
            await gate.wait()
        fresh = sealed_connection(vault, user, "github", "refreshed", "rt2", expires_at=now() + 3600)
        assert await held.store(fresh)
        assert held.current.expires_at == fresh.expires_at


async def test_concurrent_refreshes_in_one_process_refresh_once(repo: ConnectionRepository, db: Database) -> None:
    user = await new_user(db)
    vault = Vault([OLD_KEY])
    await repo.put(sealed_connection(vault, user, "github", "stale", expires_at=now() - 1))
    refreshes: list[str] = []
    await asyncio.gather(*(refresh_once(repo, user, refreshes, vault) for _ in range(10)))
    assert refreshes == [user]
    assert repo.single_flight._locks == {}  # nothing kept per connection once nobody waits
    stored = await repo.get(user, "github")
    assert stored is not None and vault.unseal(stored.access_token, token_context(
        user, "github", "access_token")) == "refreshed"


async def test_held_store_refuses_a_row_changed_meanwhile(repo: ConnectionRepository, db: Database) -> None:
    """Disconnected or reconnected while the refresh was under way: the refresh's tokens do not resurrect it."""
    user = await new_user(db)
    vault = Vault([OLD_KEY])
    await repo.put(sealed_connection(vault, user, "github", "stale", expires_at=now() - 1))
    if db.is_sqlite:  # on PostgreSQL the row is locked: the change would wait for the refresh instead
        async with repo.refreshing(user, "github") as held:
            await repo.put(sealed_connection(vault, user, "github", "reconnected"))
            assert not await held.store(sealed_connection(vault, user, "github", "refreshed"))
        stored = await repo.get(user, "github")
        assert stored is not None and vault.unseal(stored.access_token, token_context(
            user, "github", "access_token")) == "reconnected"
    async with repo.refreshing(user, "nowhere") as held:
        assert held.current is None and not await held.store(sealed_connection(vault, user, "nowhere", "x"))
        assert not await held.mark_broken()


@pytest.fixture
async def two_replicas(postgres_url: str) -> AsyncIterator[tuple[Database, Database]]:
    first, second = Database(postgres_url), Database(postgres_url)
    await first.migrate()
    yield first, second
    await first.dispose()
    await second.dispose()


async def test_two_replicas_refresh_once(two_replicas: tuple[Database, Database]) -> None:
    """Replica A refreshes and is held mid-refresh; replica B's refresh waits on the row (seen in pg_locks), then
    reads A's tokens and does not refresh."""
    first, second = two_replicas
    user = await new_user(first)
    vault = Vault([OLD_KEY])
    a, b = ConnectionRepository(first.engine), ConnectionRepository(second.engine)
    await a.put(sealed_connection(vault, user, "github", "stale", expires_at=now() - 1))
    refreshes: list[str] = []
    gate, entered = asyncio.Event(), asyncio.Event()
    holder = asyncio.create_task(refresh_once(a, user, refreshes, vault, gate, entered))
    await entered.wait()  # A is inside, holding the row
    waiter = asyncio.create_task(refresh_once(b, user, refreshes, vault))

    async def b_waits_on_the_row_lock() -> None:
        async with first.engine.connect() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                                            "AND datname = current_database()"))).scalar_one() == 1

    await eventually(b_waits_on_the_row_lock)
    assert not waiter.done()
    gate.set()
    await asyncio.gather(holder, waiter)
    assert refreshes == [user]


async def test_many_calls_on_two_replicas_refresh_once(two_replicas: tuple[Database, Database]) -> None:
    first, second = two_replicas
    user = await new_user(first)
    vault = Vault([OLD_KEY])
    replicas = (ConnectionRepository(first.engine), ConnectionRepository(second.engine))
    await replicas[0].put(sealed_connection(vault, user, "github", "stale", expires_at=now() - 1))
    refreshes: list[str] = []
    await asyncio.gather(*(refresh_once(replicas[i % 2], user, refreshes, vault) for i in range(16)))
    assert refreshes == [user]


async def test_refresh_stuck_on_another_replica_is_waited_for_a_bounded_time(
        two_replicas: tuple[Database, Database]) -> None:
    first, second = two_replicas
    user = await new_user(first)
    vault = Vault([OLD_KEY])
    a, b = ConnectionRepository(first.engine), ConnectionRepository(second.engine, refresh_wait=0.2)
    await a.put(sealed_connection(vault, user, "github", "stale", expires_at=now() - 1))
    async with a.refreshing(user, "github"):
        with pytest.raises(RefreshBusy) as raised:
            async with b.refreshing(user, "github"):
                pytest.fail("held by two replicas at once")
    assert "github" in str(raised.value)
    async with b.refreshing(user, "github") as held:  # released: B gets it, and B's connection is usable again
        assert held.current is not None


# -- re-sealing ---------------------------------------------------------------------------------------------------

async def test_reseal_moves_everything_to_the_new_key_and_is_idempotent(repo: ConnectionRepository,
                                                                        db: Database) -> None:
    user = await new_user(db)
    old, rotating, new = Vault([OLD_KEY]), Vault([NEW_KEY, OLD_KEY]), Vault([NEW_KEY])
    await repo.put(sealed_connection(old, user, "github", "access-1", "refresh-1"))
    await repo.put(sealed_connection(old, user, "linear", "access-2", None))
    server = unique("s")
    await repo.put_registered_client(StoredClient(server, ISSUER, "cid", old.seal(
        "secret-1", client_secret_context(server, ISSUER)), "client_secret_basic", "registered", now()))
    done = await reseal_all(rotating, repo)
    assert done.settled and done.clients >= 1 and done.connections >= 2
    for c in await repo.list(user_id=user):
        assert new.unseal(c.access_token, token_context(user, c.server, "access_token")).startswith("access-")
    assert new.unseal((await repo.get(user, "github")).refresh_token or b"",  # type: ignore[union-attr]
                      token_context(user, "github", "refresh_token")) == "refresh-1"
    client = await repo.registered_client(server, ISSUER)
    assert client is not None and new.unseal(client.client_secret or b"",
                                             client_secret_context(server, ISSUER)) == "secret-1"
    again = await reseal_all(rotating, repo)
    assert (again.connections, again.clients) == (0, 0) and again.already_current >= 3


async def test_reseal_does_not_overwrite_a_row_changed_since_read(repo: ConnectionRepository, db: Database) -> None:
    user = await new_user(db)
    old = Vault([OLD_KEY])
    read = await repo.put(sealed_connection(old, user, "github", "before"))
    await repo.put(sealed_connection(old, user, "github", "reconnected"))
    assert not await repo.reseal_connection(read, b"x", None)
    stored = await repo.get(user, "github")
    assert stored is not None and old.unseal(stored.access_token, token_context(
        user, "github", "access_token")) == "reconnected"
