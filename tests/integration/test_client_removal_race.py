"""Issue 12, "Tokens outlive a removed or denied client": withdrawing a client and creating grants for it.

`deputy clients deny|remove` and RFC 7592 §2.3 delete read the client's live grants once and
changed the client in another transaction, and nothing that created a grant looked at the
client: 4,783 tokens issued during a 22 s removal stayed valid. Now the withdrawal changes the
client's row and revokes its grants in one transaction, and every creation holds that row while
it writes (deputy.storage.clients). These tests race them on SQLite and PostgreSQL and count
what survives: nothing may.
"""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import and_, func, select, text

from deputy.gateway.revocations import RevocationList
from deputy.storage.clients import ClientRepository, hold_if_active, withdraw
from deputy.storage.db import Database
from deputy.storage.grants import ClientNotActive, Grant, GrantRepository, HandleRefused
from deputy.storage.tables import grants as grants_table
from tests.integration.conftest import unique

RESOURCE = "https://deputy.example.com/mcp/demo"
REDIRECT = "http://127.0.0.1:1/cb"
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
WORKERS = 6
WITHDRAWALS = ("denied", "removed")


@pytest.fixture
def grants(db: Database) -> GrantRepository:
    return GrantRepository(db.engine, access_token_ttl=600)


async def new_client(grants: GrantRepository, source: str = "cli") -> str:
    client_id = unique("client")
    await ClientRepository(grants.engine).put(client_id=client_id, client_name=client_id, redirect_uris=[REDIRECT],
                                              token_endpoint_auth_method="none", source=source)
    return client_id


async def client_credentials(grants: GrantRepository, client_id: str) -> Grant:
    return await grants.create(client_id=client_id, user_id=client_id, resource=RESOURCE, scope="demo:tools",
                               auth_time=1_700_000_000)


async def code_flow(grants: GrantRepository, client_id: str) -> tuple[Grant, str]:
    """Authorize (the grant is made with its code), redeem the code and store its refresh token."""
    code = await grants.create_with_code(client_id=client_id, user_id="alice", resource=RESOURCE, scope="demo:tools",
                                         auth_time=1_700_000_000, redirect_uri=REDIRECT, code_challenge=CHALLENGE,
                                         code_ttl=60)
    redeemed = await grants.load_code(code, client_id)
    refresh = unique("refresh")
    await grants.consume_code(code, redeemed.grant, refresh, 3600)
    return redeemed.grant, refresh


async def exchanged(grants: GrantRepository, client_id: str, subject: Grant) -> Grant:
    """A token exchange by ``client_id`` acting for another client's user (its grant is the parent)."""
    return await grants.create(client_id=client_id, user_id=subject.user_id, resource=RESOURCE, scope="demo:tools",
                               auth_time=1_700_000_000, parent_grant_id=subject.grant_id)


async def live_grants_of(grants: GrantRepository, client_id: str) -> int:
    async with grants.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(grants_table).where(and_(
            grants_table.c.client_id == client_id, grants_table.c.revoked_at.is_(None))))).scalar_one())


@pytest.mark.parametrize("status", WITHDRAWALS)
async def test_no_grant_of_a_client_survives_its_withdrawal_racing_issuance(
        grants: GrantRepository, status: str) -> None:
    """Issue 12: grants created (client credentials, code flow, refresh rotation, exchange) while the client is
    denied or removed are all revoked, whatever the interleaving, and none is created once it has returned."""
    client_id = await new_client(grants)
    other_client = await new_client(grants)
    subject, _ = await code_flow(grants, other_client)  # another client's user, for exchanges
    made: list[str] = []
    started = [asyncio.Event() for _ in range(WORKERS)]
    withdrawn = asyncio.Event()
    refused_after: list[bool] = []

    async def issue(step: int, worker: int) -> None:
        kind = (step + worker) % 4
        if kind == 0:
            made.append((await client_credentials(grants, client_id)).grant_id)
        elif kind == 1:
            grant, refresh = await code_flow(grants, client_id)
            made.append(grant.grant_id)
            _, successor = await grants.rotate_refresh_token(refresh, client_id, 3600)
            await grants.rotate_refresh_token(successor, client_id, 3600)
        elif kind == 2:
            made.append((await exchanged(grants, client_id, subject)).grant_id)
        else:
            made.append((await client_credentials(grants, client_id)).grant_id)

    async def worker(index: int) -> None:
        step = 0
        while True:
            after = withdrawn.is_set()
            try:
                await issue(step, index)
            except HandleRefused:  # ClientNotActive, or the grant it was rotating was revoked under it
                if after:
                    refused_after.append(True)
                    return
            else:
                # Nothing may be created once the withdrawal has returned.
                assert not after, "a grant was created after the withdrawal returned"
            started[index].set()
            step += 1

    tasks = [asyncio.create_task(worker(i)) for i in range(WORKERS)]
    for event in started:
        await event.wait()
    revoked = await grants.withdraw_client(client_id, status, "test withdrawal")
    withdrawn.set()
    await asyncio.gather(*tasks)

    assert revoked is not None and revoked >= 1
    assert len(refused_after) == WORKERS
    assert await live_grants_of(grants, client_id) == 0
    view = RevocationList(grants, max_staleness=60, interval=3600)
    await view.refresh()  # a replica that reads the revocations from scratch
    assert made and all(view.is_revoked(g) for g in made)
    assert not view.is_revoked(subject.grant_id)  # another client's grant is untouched
    for create in (lambda: client_credentials(grants, client_id), lambda: code_flow(grants, client_id),
                   lambda: exchanged(grants, client_id, subject)):
        with pytest.raises(ClientNotActive):
            await create()


async def test_refreshing_a_grant_of_a_denied_client_fails(grants: GrantRepository) -> None:
    """Issue 12: a denied client's refresh token is dead (its grant is revoked) and its grant cannot rotate."""
    client_id = await new_client(grants)
    grant, refresh = await code_flow(grants, client_id)
    assert await grants.withdraw_client(client_id, "denied", "test") == 1
    with pytest.raises(HandleRefused):
        await grants.rotate_refresh_token(refresh, client_id, 3600)
    with pytest.raises(ClientNotActive):  # even were the grant live, the client is checked where it rotates
        await grants.use_refresh_token(refresh, grant, unique("successor"), 3600)
    stored = await grants.get(grant.grant_id)
    assert stored is not None and stored.revoked_at is not None


async def test_withdrawing_an_unknown_client_changes_nothing(grants: GrantRepository) -> None:
    assert await grants.withdraw_client(unique("absent"), "denied", "test") is None
    assert await grants.withdraw_client(unique("absent"), "removed", "test") is None


# --- the two orders, held open on PostgreSQL -------------------------------------------------------------


async def wait_for_a_lock_wait(grants: GrantRepository) -> None:
    """Until some session of this database waits for a row lock (bounded: there is no event to await)."""
    query = text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                 "AND wait_event_type = 'Lock'")
    for _ in range(400):
        async with grants.engine.connect() as conn:
            if (await conn.execute(query)).scalar_one() > 0:
                return
        await asyncio.sleep(0.025)
    raise AssertionError("nobody waited for the lock")



async def test_a_creation_that_holds_the_client_first_is_revoked_by_the_withdrawal(
        postgres_grants: GrantRepository) -> None:
    """Issue 12: the withdrawal waits for a creation already holding the client and revokes what it wrote."""
    grants = postgres_grants
    client_id = await new_client(grants)
    grant_id = unique("grant")
    async with grants.engine.connect() as creating:
        transaction = await creating.begin()
        assert await hold_if_active(creating, client_id)
        await creating.execute(grants_table.insert().values(
            grant_id=grant_id, client_id=client_id, user_id="alice", resource=RESOURCE, scope="demo:tools",
            auth_time=1, created_at=1))
        withdrawal = asyncio.create_task(grants.withdraw_client(client_id, "removed", "test"))
        await wait_for_a_lock_wait(grants)
        assert not withdrawal.done()
        await transaction.commit()
    assert await withdrawal == 1
    stored = await grants.get(grant_id)
    assert stored is not None and stored.revoked_at is not None


async def test_a_creation_that_comes_during_the_withdrawal_is_refused(postgres_grants: GrantRepository) -> None:
    """Issue 12: a creation that reaches the client while it is being withdrawn waits, then finds it gone."""
    grants = postgres_grants
    for status in WITHDRAWALS:
        client_id = await new_client(grants, source="config")
        async with grants.engine.connect() as withdrawing:
            transaction = await withdrawing.begin()
            assert await withdraw(withdrawing, client_id, status)
            creation = asyncio.create_task(client_credentials(grants, client_id))
            await wait_for_a_lock_wait(grants)
            assert not creation.done()
            await transaction.commit()
        with pytest.raises(ClientNotActive):
            await creation
        assert await live_grants_of(grants, client_id) == 0

