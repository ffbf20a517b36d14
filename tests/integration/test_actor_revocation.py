"""Issue 12: revoking an actor's own token ends every token exchanged with it (RFC 8693 §4.1, RFC 7009 §2.1).

A grant made by token exchange carries the authority of two grants: the subject's
(its parent) and the actor token's. Before the fix only the parent was recorded, so an
agent whose own token was revoked kept every token it had obtained by exchange. These
run on SQLite and PostgreSQL, including an exchange racing the actor's revocation in
both orders.
"""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import and_, func, select, text, update

from deputy.gateway.revocations import RevocationList
from deputy.storage.clients import ClientRepository
from deputy.storage.db import Database
from deputy.storage.exchanged_grants import insert_derived
from deputy.storage.grants import Grant, GrantRepository, HandleRefused, Revoked
from deputy.storage.tables import grants as grants_table
from tests.integration.conftest import unique

RESOURCE = "https://deputy.example.com/mcp/demo"


@pytest.fixture
def grants(db: Database) -> GrantRepository:
    return GrantRepository(db.engine, access_token_ttl=600)


async def registered(grants: GrantRepository, prefix: str) -> str:
    """A new active client (grants are created only for one)."""
    client_id = unique(prefix)
    await ClientRepository(grants.engine).put(client_id=client_id, client_name=prefix, redirect_uris=[],
                                              token_endpoint_auth_method="client_secret_basic", source="cli",
                                              grant_types=("client_credentials",))
    return client_id


async def own_grant(grants: GrantRepository) -> Grant:
    """A grant with no source: Alice's authorization, or an agent's client credentials."""
    client_id = await registered(grants, "client")
    return await grants.create(client_id=client_id, user_id=client_id, resource=RESOURCE, scope="demo:tools",
                               auth_time=1_700_000_000)


async def exchanged(grants: GrantRepository, subject: Grant | None, actor: Grant | None) -> Grant:
    return await grants.create(client_id=actor.client_id if actor else await registered(grants, "agent"),
                               user_id="alice", resource=RESOURCE, scope="demo:tools", auth_time=1_700_000_000,
                               parent_grant_id=subject.grant_id if subject else None,
                               actor_grant_id=actor.grant_id if actor else None)


async def is_revoked(grants: GrantRepository, grant: Grant) -> bool:
    stored = await grants.get(grant.grant_id)
    assert stored is not None
    return stored.revoked_at is not None


async def test_revoking_the_actor_revokes_the_tokens_exchanged_with_it(grants: GrantRepository) -> None:
    """Issue 12: the agent's own token is revoked; what it obtained by exchange, at any depth, goes with it."""
    alice, agent_a, agent_b = await own_grant(grants), await own_grant(grants), await own_grant(grants)
    by_a = await exchanged(grants, alice, agent_a)
    by_b = await exchanged(grants, by_a, agent_b)  # B acting for A acting for Alice
    outside_subject = await exchanged(grants, None, agent_a)  # a subject token from a trusted issuer
    bystander = await exchanged(grants, alice, agent_b)
    assert by_a.actor_grant_id == agent_a.grant_id
    assert await grants.get(by_a.grant_id) == by_a

    view = RevocationList(grants, max_staleness=60, interval=3600)
    await view.start()
    try:
        assert await grants.revoke(agent_a.grant_id, "revoked_by_client")
        for derived in (by_a, by_b, outside_subject):
            assert await is_revoked(grants, derived), derived
            # In this process's view before revoke() returned; in the table every replica reads.
            assert view.is_revoked(derived.grant_id), derived
    finally:
        await view.stop()
    for untouched in (alice, agent_b, bystander):
        assert not await is_revoked(grants, untouched), untouched
    rows, _ = await grants.revocations_after(None)
    assert {by_a.grant_id, by_b.grant_id, outside_subject.grant_id} <= {r.grant_id for r in rows}


async def test_revoking_an_inner_actor_revokes_the_outer_exchanges(grants: GrantRepository) -> None:
    """Issue 12: revoking agent B's own token ends B's token and what was exchanged from it, not A's."""
    alice, agent_a, agent_b, agent_c = (await own_grant(grants), await own_grant(grants), await own_grant(grants),
                                        await own_grant(grants))
    by_a = await exchanged(grants, alice, agent_a)
    by_b = await exchanged(grants, by_a, agent_b)
    by_c = await exchanged(grants, by_b, agent_c)
    assert await grants.revoke(agent_b.grant_id, "revoked_by_client")
    assert await is_revoked(grants, by_b) and await is_revoked(grants, by_c)
    assert not await is_revoked(grants, by_a)
    assert not await is_revoked(grants, agent_c)


async def test_no_exchange_with_a_revoked_or_unknown_actor(grants: GrantRepository) -> None:
    """Issue 12: the actor's grant is checked in the transaction that writes the child."""
    alice, agent = await own_grant(grants), await own_grant(grants)
    await grants.revoke(agent.grant_id, "revoked_by_client")
    with pytest.raises(HandleRefused):
        await exchanged(grants, alice, agent)
    with pytest.raises(HandleRefused):
        await exchanged(grants, None, agent)
    with pytest.raises(HandleRefused):
        await grants.create(client_id=agent.client_id, user_id="alice", resource=RESOURCE, scope="demo:tools",
                            auth_time=1, parent_grant_id=alice.grant_id, actor_grant_id="no-such-grant")


async def test_an_exchange_committed_before_the_actor_is_revoked_is_revoked_with_it(
        grants: GrantRepository) -> None:
    """Issue 12: the exchange's transaction is open when the actor's revocation starts; the revocation waits
    for it and then revokes the child it wrote."""
    alice, agent = await own_grant(grants), await own_grant(grants)
    child_id = unique("child")
    async with grants.engine.connect() as conn:
        transaction = await conn.begin()
        assert await insert_derived(conn, _values(child_id), parent_grant_id=alice.grant_id,
                                    actor_grant_id=agent.grant_id)
        revocation = asyncio.create_task(grants.revoke(agent.grant_id, "revoked_by_client"))
        await until_someone_waits_for_a_lock(grants)
        assert not revocation.done(), "the revocation did not wait for the exchange writing from the actor"
        await transaction.commit()
    assert await revocation
    child = await grants.get(child_id)
    assert child is not None and child.revoked_at is not None, "a live child of a revoked actor"
    rows, _ = await grants.revocations_after(None)
    assert child_id in {r.grant_id for r in rows}


@pytest.mark.parametrize("source", ["actor", "subject"])
async def test_an_exchange_racing_a_revocation_in_flight_writes_nothing(grants: GrantRepository,
                                                                        source: str) -> None:
    """Issue 12: the revocation's transaction is open when the exchange starts: the exchange is refused, it never
    writes a child of a grant being revoked."""
    alice, agent = await own_grant(grants), await own_grant(grants)
    revoked_grant = agent if source == "actor" else alice
    log: Revoked = []
    async with grants.engine.connect() as conn:
        transaction = await conn.begin()
        assert await grants.revoke_families(conn, user_id=revoked_grant.user_id, client_id=revoked_grant.client_id,
                                            resource=None, reason="test", revoked_log=log) == 1
        if grants.engine.dialect.name == "postgresql":
            # The grant being revoked is locked: the exchange does not queue behind it, it is refused at once
            # (the bound only turns a queued exchange, which would wait for this very test, into a failure).
            with pytest.raises(HandleRefused):
                await asyncio.wait_for(exchanged(grants, alice, agent), timeout=60)
            await transaction.commit()
        else:
            # SQLite has one writer: the exchange waits for the revocation to commit, then finds it.
            exchange = asyncio.create_task(exchanged(grants, alice, agent))
            await until_someone_waits_for_a_lock(grants)
            await transaction.commit()
            with pytest.raises(HandleRefused):
                await exchange
    assert not [g for g in await _children(grants, alice) if g.revoked_at is None]


async def test_an_actor_exchanged_more_times_than_a_statement_takes_parameters_is_revoked_whole(
        grants: GrantRepository) -> None:
    """Issue 12: an agent's token may be exchanged tens of thousands of times in its life; revoking it binds more
    grant ids than one statement takes (32767 on asyncpg), so the cascade works in chunks rather than fail and
    revoke nothing."""
    agent = await own_grant(grants)
    many = [f"bulk-{agent.grant_id[:8]}-{n}" for n in range(33_000)]
    async with grants.engine.begin() as conn:  # written directly: only the revocation is under test
        await conn.execute(grants_table.insert(), [{**_values(g), "actor_grant_id": agent.grant_id} for g in many])
    assert await grants.revoke(agent.grant_id, "revoked_by_client")
    async with grants.engine.connect() as conn:
        live = (await conn.execute(select(func.count()).select_from(grants_table).where(and_(
            grants_table.c.actor_grant_id == agent.grant_id, grants_table.c.revoked_at.is_(None))))).scalar_one()
    assert live == 0
    rows, _ = await grants.revocations_after(None)
    assert set(many) <= {r.grant_id for r in rows}


async def test_a_cycle_of_links_ends(grants: GrantRepository) -> None:
    """Links only point at older grants, so they cannot form a cycle; if a row says otherwise the cascade still
    ends, and revokes every grant on the cycle."""
    alice, agent = await own_grant(grants), await own_grant(grants)
    first = await exchanged(grants, alice, agent)
    second = await exchanged(grants, first, agent)
    async with grants.engine.begin() as conn:
        await conn.execute(update(grants_table).where(grants_table.c.grant_id == first.grant_id)
                           .values(actor_grant_id=second.grant_id))
    assert await asyncio.wait_for(grants.revoke(second.grant_id, "test"), timeout=30)
    assert await is_revoked(grants, first)
    assert not await is_revoked(grants, alice)


async def until_someone_waits_for_a_lock(grants: GrantRepository) -> None:
    """PostgreSQL: poll (bounded) until a session of this database waits for a lock, so the race really happens
    in the order the test names. SQLite's writer waits inside the driver, where nothing can be observed: yield
    to let the racing task start."""
    if grants.engine.dialect.name != "postgresql":
        for _ in range(20):
            await asyncio.sleep(0)
        return
    for _ in range(2000):
        async with grants.engine.connect() as conn:  # a new transaction each time: activity is a snapshot
            waiting = (await conn.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'"))).scalar_one()
        if waiting:
            return
        await asyncio.sleep(0.005)
    pytest.fail("nobody ever waited for the lock the test holds")


async def _children(grants: GrantRepository, parent: Grant) -> list[Grant]:
    async with grants.engine.connect() as conn:
        rows = (await conn.execute(select(grants_table.c.grant_id)
                                   .where(grants_table.c.parent_grant_id == parent.grant_id))).all()
    found = [await grants.get(row.grant_id) for row in rows]
    return [g for g in found if g is not None]


def _values(grant_id: str) -> dict[str, object]:
    return dict(grant_id=grant_id, client_id="agent", user_id="alice", resource=RESOURCE, scope="demo:tools",
                auth_time=1_700_000_000, created_at=1_700_000_000)
