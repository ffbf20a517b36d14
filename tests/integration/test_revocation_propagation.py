"""Revocations reach the gateway's view whatever order their transactions commit in (issue 11, finding 9a).

PostgreSQL draws revocation ids at insert and commits out of id order; the view must
still see a lower id that commits after a higher one was read. A revocation made by
this process is in its view before the call that made it returns.
"""

from __future__ import annotations

import pytest

from deputy.gateway.revocations import RevocationList
from deputy.storage.clients import ClientRepository
from deputy.storage.db import Database
from deputy.storage.grants import Grant, GrantRepository, HandleRefused, Revoked
from tests.integration.conftest import unique

RESOURCE = "https://deputy.example.com/mcp/demo"



@pytest.fixture
def grants(db: Database) -> GrantRepository:
    return GrantRepository(db.engine, access_token_ttl=600)


async def registered(grants: GrantRepository) -> str:
    """A new active client: grants are made only for one (issue 12)."""
    client_id = unique("client")
    await ClientRepository(grants.engine).put(client_id=client_id, client_name=client_id,
                                              redirect_uris=["http://127.0.0.1:1/cb"],
                                              token_endpoint_auth_method="none", source="cli")
    return client_id


async def new_grant(grants: GrantRepository, parent: Grant | None = None) -> Grant:
    return await grants.create(client_id=await registered(grants), user_id="user-1", resource=RESOURCE,
                               scope="demo:tools", auth_time=1_700_000_000,
                               parent_grant_id=parent.grant_id if parent else None)


async def test_a_lower_revocation_id_committed_after_a_higher_one_was_read_is_applied(
        postgres_grants: GrantRepository) -> None:
    grants = postgres_grants
    earlier, later = await new_grant(grants), await new_grant(grants)
    view = RevocationList(grants, max_staleness=60)
    await view.refresh()
    log: Revoked = []
    async with grants.engine.connect() as first, grants.engine.connect() as second:
        first_txn, second_txn = await first.begin(), await second.begin()
        # The row for `earlier` takes id n, the row for `later` id n+1 ...
        await grants.revoke_families(first, user_id="user-1", client_id=earlier.client_id, resource=None,
                                     reason="test", revoked_log=log)
        await grants.revoke_families(second, user_id="user-1", client_id=later.client_id, resource=None,
                                     reason="test", revoked_log=log)
        # ... and n+1 commits first and is read while n is still open.
        await second_txn.commit()
        await view.refresh()
        assert view.is_revoked(later.grant_id)
        assert not view.is_revoked(earlier.grant_id)
        await first_txn.commit()
    await view.refresh()
    assert view.is_revoked(earlier.grant_id), "a revocation that committed out of id order was never applied"

    ids = {r.grant_id: r.revocation_id for r in await grants.revocations_since(0)}
    assert ids[earlier.grant_id] < ids[later.grant_id], "the two transactions really committed out of id order"


async def test_revocations_racing_polls_are_all_applied(postgres_grants: GrantRepository) -> None:
    """Many revocations, each in its own transaction, committing in shuffled order between polls."""
    grants = postgres_grants
    revoked = [await new_grant(grants) for _ in range(12)]
    view = RevocationList(grants, max_staleness=60)
    await view.refresh()
    log: Revoked = []
    async with grants.engine.connect() as a, grants.engine.connect() as b, grants.engine.connect() as c:
        connections = [a, b, c]
        for batch in (revoked[0:3], revoked[3:6], revoked[6:9], revoked[9:12]):
            transactions = [await conn.begin() for conn in connections]
            for conn, grant in zip(connections, batch, strict=True):
                await grants.revoke_families(conn, user_id="user-1", client_id=grant.client_id, resource=None,
                                             reason="test", revoked_log=log)
            for transaction in reversed(transactions):
                await transaction.commit()
                await view.refresh()
    assert [g.grant_id for g in revoked if not view.is_revoked(g.grant_id)] == []


async def test_a_revocation_made_here_is_applied_before_revoke_returns(grants: GrantRepository) -> None:
    """No poll in between (the poll interval is an hour): revoking through the repository updates the view,
    including the grants exchanged from the revoked one."""
    parent = await new_grant(grants)
    child = await new_grant(grants, parent)
    bystander = await new_grant(grants)
    view = RevocationList(grants, max_staleness=60, interval=3600)
    await view.start()
    try:
        assert not view.is_revoked(parent.grant_id)
        assert await grants.revoke(parent.grant_id, "revoked_by_client")
        assert view.is_revoked(parent.grant_id)
        assert view.is_revoked(child.grant_id)
        assert not view.is_revoked(bystander.grant_id)
    finally:
        await view.stop()
    assert view.catch_up not in grants.revocation_views


async def test_a_replayed_refresh_token_is_revoked_here_at_once(grants: GrantRepository) -> None:
    client_id = await registered(grants)
    code = await grants.create_with_code(
        client_id=client_id, user_id="user-1", resource=RESOURCE, scope="demo:tools", auth_time=1_700_000_000,
        redirect_uri="http://127.0.0.1:1/cb", code_challenge="x" * 43, code_ttl=60)
    grant = (await grants.redeem_code(code, client_id)).grant
    token = await grants.issue_refresh_token(grant.grant_id, 3600)
    await grants.rotate_refresh_token(token, client_id, 3600)
    view = RevocationList(grants, max_staleness=60, interval=3600)
    await view.start()
    try:
        with pytest.raises(HandleRefused):
            await grants.rotate_refresh_token(token, client_id, 3600)
        assert view.is_revoked(grant.grant_id)
    finally:
        await view.stop()



@pytest.mark.parametrize("max_staleness", [0.5, 1.0, 5.0, 300.0])
async def test_the_view_stays_fresh_between_polls(grants: GrantRepository, max_staleness: float) -> None:
    """CI run of 2026-12-04: with `revocation_max_staleness = 1.0` the view was polled once a second, so it
    went stale for the length of every read and a healthy gateway answered 503. The view is polled often
    enough that a read taking up to half the bound never lets it go stale."""
    view = RevocationList(grants, max_staleness=max_staleness)
    assert view.interval + max_staleness / 2 < max_staleness
    await view.start()
    try:
        view.check_fresh()
    finally:
        await view.stop()
