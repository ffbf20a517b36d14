"""Repositories on both backends: users, clients, grants (codes, refresh tokens, revocation), consents, sessions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.config import Config as _AlembicConfig
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from deputy import clock
from deputy.gateway.revocations import RevocationList, RevocationsUnavailable
from deputy.storage.clients import ClientRepository
from deputy.storage.consents import ConsentRepository
from deputy.storage.db import MIGRATIONS, Database
from deputy.storage.grants import GrantRepository, HandleRefused, RedeemedCode
from deputy.storage.sessions import SessionRepository
from deputy.storage.tables import metadata
from deputy.storage.users import UserExists, UserRepository
from tests.integration.conftest import unique
from tests.support.databases import database_url

_config = _AlembicConfig()
_config.set_main_option("script_location", str(MIGRATIONS))
HEAD = ScriptDirectory.from_config(_config).get_current_head()

RESOURCE = "https://deputy.example.com/mcp/demo"
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
REDIRECT = "http://127.0.0.1:33418/callback"
TABLES = {"users", "clients", "login_sessions", "authorization_requests", "grants", "authorization_codes",
          "refresh_tokens", "revocations", "consents"}


@pytest.fixture
def fresh_url(backend: str, tmp_path: Path) -> Iterator[str]:
    with database_url(backend, tmp_path) as value:
        yield value


@pytest.fixture
async def grants(db: Database) -> GrantRepository:
    repository = GrantRepository(db.engine, access_token_ttl=600)
    for agent in ("agent-a", "agent-b"):
        await register(repository, agent)
    return repository


async def register(grants: GrantRepository, client_id: str) -> None:
    """Grants are made only for an active client (issue 12), so each test's client is registered first."""
    await ClientRepository(grants.engine).put(client_id=client_id, client_name=client_id, redirect_uris=[REDIRECT],
                                              token_endpoint_auth_method="none", source="cli")


async def new_code(grants: GrantRepository, client_id: str, code_ttl: int = 60) -> str:
    await register(grants, client_id)
    return await grants.create_with_code(
        client_id=client_id, user_id="user-1", resource=RESOURCE, scope="demo:tools", auth_time=1_700_000_000,
        redirect_uri=REDIRECT, code_challenge=CHALLENGE, code_ttl=code_ttl)


async def new_grant(grants: GrantRepository, client_id: str) -> str:
    return (await grants.redeem_code(await new_code(grants, client_id), client_id)).grant.grant_id


async def revoked_ids(grants: GrantRepository) -> set[str]:
    return {r.grant_id for r in await grants.revocations_since(0)}


# --- migrations -------------------------------------------------------------------------------------


async def test_migrations_are_idempotent(fresh_url: str) -> None:
    database = Database(fresh_url)
    try:
        await database.migrate()
        await database.migrate()
        async with database.engine.connect() as conn:
            names = set(await conn.run_sync(lambda sync: inspect(sync).get_table_names()))
            version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalars().all()
        assert names >= TABLES
        assert version == [HEAD]
        users = UserRepository(database.engine)
        assert (await users.add("after-migrate", "pw")).username == "after-migrate"
    finally:
        await database.dispose()


async def test_the_migrations_make_every_index_the_tables_declare(fresh_url: str) -> None:
    """tables.py is the schema's description and the migrations make it: every index declared there exists, on its
    columns (migration 0015: pending authorization requests by expiry, which each new one deletes by; review of
    2026-12-06)."""
    database = Database(fresh_url)
    try:
        await database.migrate()
        async with database.engine.connect() as conn:
            made = await conn.run_sync(lambda sync: {
                index["name"]: (table, tuple(index["column_names"]))
                for table in metadata.tables for index in inspect(sync).get_indexes(table)})
    finally:
        await database.dispose()
    declared = {str(index.name): (table.name, tuple(column.name for column in index.columns))
                for table in metadata.tables.values() for index in table.indexes}
    assert declared["ix_authorization_requests_expires_at"] == ("authorization_requests", ("expires_at",))
    assert {name: made.get(name) for name in declared} == declared


async def test_concurrent_migrations(backend: str, fresh_url: str) -> None:
    """Processes starting together on one database: one migrates, the others find nothing to do."""
    first, second = Database(fresh_url), Database(fresh_url)
    try:
        await asyncio.gather(first.migrate(), second.migrate())
        async with first.engine.connect() as conn:
            version = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalars().all()
        assert version == [HEAD]
    finally:
        await first.dispose()
        await second.dispose()


# --- users ------------------------------------------------------------------------------------------


async def test_users(db: Database) -> None:
    users = UserRepository(db.engine)
    name = unique("alice")
    alice = await users.add(name, "correct horse")
    assert alice.username == name
    assert await users.authenticate(name, "correct horse") == alice
    assert await users.authenticate(name, "wrong horse") is None
    assert await users.authenticate(name, "") is None
    assert await users.authenticate(unique("nobody"), "correct horse") is None
    assert await users.get(alice.user_id) == alice
    assert await users.get("no-such-id") is None
    assert alice in await users.list()


async def test_duplicate_user(db: Database) -> None:
    users = UserRepository(db.engine)
    name = unique("bob")
    first = await users.add(name, "one")
    with pytest.raises(UserExists):
        await users.add(name, "two")
    assert await users.authenticate(name, "one") == first
    assert await users.authenticate(name, "two") is None


async def test_set_password(db: Database) -> None:
    users = UserRepository(db.engine)
    name = unique("carol")
    carol = await users.add(name, "old")
    assert await users.set_password(name, "new") is True
    assert await users.authenticate(name, "new") == carol
    assert await users.authenticate(name, "old") is None
    assert await users.set_password(unique("nobody"), "x") is False


# --- clients ----------------------------------------------------------------------------------------


async def test_public_client(db: Database) -> None:
    clients = ClientRepository(db.engine)
    client_id = unique("public")
    put = await clients.put(client_id=client_id, client_name="Public", redirect_uris=[REDIRECT],
                            token_endpoint_auth_method="none", source="registration")
    got = await clients.get(client_id)
    assert got == put
    assert got is not None
    assert got.redirect_uris == (REDIRECT,)
    assert got.grant_types == ("authorization_code", "refresh_token")
    assert got.is_public is True
    assert got.client_secret_hash is None
    assert await got.verify_secret("") is False
    assert await got.verify_secret("anything") is False
    assert await clients.get(unique("absent")) is None


async def test_confidential_client_replace_and_remove(db: Database) -> None:
    clients = ClientRepository(db.engine)
    client_id = unique("confidential")
    await clients.put(client_id=client_id, client_name="First", redirect_uris=[REDIRECT],
                      token_endpoint_auth_method="client_secret_basic", source="config", client_secret="s1")
    first = await clients.get(client_id)
    assert first is not None
    assert first.is_public is False
    assert first.client_secret_hash is not None
    assert "s1" not in first.client_secret_hash
    assert await first.verify_secret("s1") is True
    assert await first.verify_secret("s2") is False
    await clients.put(client_id=client_id, client_name="Second", redirect_uris=[REDIRECT, "http://127.0.0.1/b"],
                      token_endpoint_auth_method="client_secret_post", source="config", client_secret="s2")
    second = await clients.get(client_id)
    assert second is not None
    assert second.client_name == "Second"
    assert second.redirect_uris == (REDIRECT, "http://127.0.0.1/b")
    assert second.token_endpoint_auth_method == "client_secret_post"
    assert await second.verify_secret("s2") is True
    assert await second.verify_secret("s1") is False
    assert [c.client_id for c in await clients.list()].count(client_id) == 1
    assert await clients.remove(client_id) is True
    assert await clients.get(client_id) is None
    assert await clients.remove(client_id) is False


async def test_assertion_identifiers_are_accepted_once(db: Database) -> None:
    """RFC 7523 §3 item 7 / ID-JAG replay: one jti per issuer once, even when two requests race."""
    clients = ClientRepository(db.engine)
    issuer, jti = unique("issuer"), unique("jti")
    expires = int(time.time()) + 300
    assert await clients.remember_assertion(issuer, jti, expires) is True
    assert await clients.remember_assertion(issuer, jti, expires) is False
    assert await clients.remember_assertion(unique("other-issuer"), jti, expires) is True  # per issuer
    raced = unique("raced")
    results = await asyncio.gather(*(clients.remember_assertion(issuer, raced, expires) for _ in range(8)))
    assert sorted(results) == [False] * 7 + [True]


# --- authorization codes ----------------------------------------------------------------------------


async def test_redeem_code_once(grants: GrantRepository) -> None:
    client_id = unique("client")
    code = await new_code(grants, client_id)
    redeemed = await grants.redeem_code(code, client_id)
    assert isinstance(redeemed, RedeemedCode)
    assert redeemed.redirect_uri == REDIRECT
    assert redeemed.code_challenge == CHALLENGE
    grant = redeemed.grant
    assert (grant.client_id, grant.user_id, grant.resource, grant.scope, grant.auth_time) == (
        client_id, "user-1", RESOURCE, "demo:tools", 1_700_000_000)
    assert await grants.get(grant.grant_id) == grant
    assert grant.grant_id not in await revoked_ids(grants)


async def test_code_reuse_revokes_the_grant(grants: GrantRepository) -> None:
    client_id = unique("client")
    code = await new_code(grants, client_id)
    grant_id = (await grants.redeem_code(code, client_id)).grant.grant_id
    refresh = await grants.issue_refresh_token(grant_id, 3600)
    with pytest.raises(HandleRefused):
        await grants.redeem_code(code, client_id)
    # OAuth 2.1 §4.1.3: everything issued from the code is revoked.
    assert grant_id in await revoked_ids(grants)
    with pytest.raises(HandleRefused):
        await grants.rotate_refresh_token(refresh, client_id, 3600)


async def test_concurrent_code_redemption(grants: GrantRepository) -> None:
    for _ in range(5):
        client_id = unique("client")
        code = await new_code(grants, client_id)
        results = await asyncio.gather(*(grants.redeem_code(code, client_id) for _ in range(4)),
                                       return_exceptions=True)
        assert sum(isinstance(r, RedeemedCode) for r in results) == 1, results
        assert sum(isinstance(r, HandleRefused) for r in results) == 3, results


async def test_unknown_code(grants: GrantRepository) -> None:
    before = await revoked_ids(grants)
    with pytest.raises(HandleRefused):
        await grants.redeem_code("no-such-code", unique("client"))
    assert await revoked_ids(grants) == before


async def test_expired_code(grants: GrantRepository) -> None:
    client_id = unique("client")
    code = await new_code(grants, client_id, code_ttl=-5)
    with pytest.raises(HandleRefused):
        await grants.redeem_code(code, client_id)


async def test_code_for_another_client(grants: GrantRepository) -> None:
    client_id = unique("client")
    code = await new_code(grants, client_id)
    with pytest.raises(HandleRefused):
        await grants.redeem_code(code, unique("other"))


# --- refresh tokens ---------------------------------------------------------------------------------


async def test_refresh_rotation(grants: GrantRepository) -> None:
    client_id = unique("client")
    grant_id = await new_grant(grants, client_id)
    first = await grants.issue_refresh_token(grant_id, 3600)
    grant, second = await grants.rotate_refresh_token(first, client_id, 3600)
    assert grant.grant_id == grant_id
    assert second != first
    grant, third = await grants.rotate_refresh_token(second, client_id, 3600)
    assert grant.grant_id == grant_id
    assert len({first, second, third}) == 3
    assert grant_id not in await revoked_ids(grants)


async def test_refresh_reuse_revokes_the_family(grants: GrantRepository) -> None:
    client_id = unique("client")
    grant_id = await new_grant(grants, client_id)
    old = await grants.issue_refresh_token(grant_id, 3600)
    _, successor = await grants.rotate_refresh_token(old, client_id, 3600)
    with pytest.raises(HandleRefused):
        await grants.rotate_refresh_token(old, client_id, 3600)
    assert grant_id in await revoked_ids(grants)
    with pytest.raises(HandleRefused):
        await grants.rotate_refresh_token(successor, client_id, 3600)


async def test_concurrent_refresh_rotation(grants: GrantRepository) -> None:
    for _ in range(5):
        client_id = unique("client")
        grant_id = await new_grant(grants, client_id)
        token = await grants.issue_refresh_token(grant_id, 3600)
        results = await asyncio.gather(*(grants.rotate_refresh_token(token, client_id, 3600) for _ in range(4)),
                                       return_exceptions=True)
        assert sum(isinstance(r, tuple) for r in results) == 1, results
        assert sum(isinstance(r, HandleRefused) for r in results) == 3, results


async def test_refresh_token_of_another_client_is_not_consumed(grants: GrantRepository) -> None:
    client_id = unique("client")
    grant_id = await new_grant(grants, client_id)
    token = await grants.issue_refresh_token(grant_id, 3600)
    with pytest.raises(HandleRefused):
        await grants.rotate_refresh_token(token, unique("other"), 3600)
    assert grant_id not in await revoked_ids(grants)
    grant, _ = await grants.rotate_refresh_token(token, client_id, 3600)
    assert grant.grant_id == grant_id


async def test_expired_refresh_token(grants: GrantRepository) -> None:
    client_id = unique("client")
    grant_id = await new_grant(grants, client_id)
    token = await grants.issue_refresh_token(grant_id, -5)
    with pytest.raises(HandleRefused):
        await grants.rotate_refresh_token(token, client_id, 3600)


async def test_unknown_refresh_token(grants: GrantRepository) -> None:
    with pytest.raises(HandleRefused):
        await grants.rotate_refresh_token("no-such-token", unique("client"), 3600)


async def test_explicit_revoke(grants: GrantRepository) -> None:
    client_id = unique("client")
    grant_id = await new_grant(grants, client_id)
    token = await grants.issue_refresh_token(grant_id, 3600)
    assert await grants.revoke(grant_id, "user") is True
    assert await grants.revoke(grant_id, "user") is False
    revocations = [r for r in await grants.revocations_since(0) if r.grant_id == grant_id]
    assert len(revocations) == 1
    with pytest.raises(HandleRefused):
        await grants.rotate_refresh_token(token, client_id, 3600)
    assert await grants.revoke("no-such-grant", "user") is False


async def test_revocations_since_is_incremental(grants: GrantRepository) -> None:
    first = await new_grant(grants, unique("client"))
    second = await new_grant(grants, unique("client"))
    await grants.revoke(first, "user")
    mark = max(r.revocation_id for r in await grants.revocations_since(0))
    before = int(time.time())
    await grants.revoke(second, "user")
    later = await grants.revocations_since(mark)
    assert [r.grant_id for r in later] == [second]
    # A revocation outlives every access token of the grant (TTL 600) plus leeway.
    assert before + 600 + 60 <= later[0].expires_at <= int(time.time()) + 600 + 60


# --- consents ---------------------------------------------------------------------------------------


async def test_revoking_a_grant_revokes_what_was_exchanged_from_it(grants: GrantRepository) -> None:
    """Alice's grant → agent A's exchanged grant → agent B's: revoking Alice's revokes the chain."""
    root = await new_grant(grants, unique("client"))
    child = await grants.create(client_id="agent-a", user_id="alice", resource=RESOURCE, scope="demo:tools",
                                auth_time=int(time.time()), parent_grant_id=root)
    grandchild = await grants.create(client_id="agent-b", user_id="alice", resource=RESOURCE, scope="demo:tools",
                                     auth_time=int(time.time()), parent_grant_id=child.grant_id)
    sibling = await new_grant(grants, unique("client"))
    assert child.parent_grant_id == root
    assert await grants.revoke(root, "user") is True
    for grant_id in (root, child.grant_id, grandchild.grant_id):
        stored = await grants.get(grant_id)
        assert stored is not None and stored.revoked_at is not None, grant_id
    sibling_row = await grants.get(sibling)
    assert sibling_row is not None and sibling_row.revoked_at is None
    assert {root, child.grant_id, grandchild.grant_id} <= await revoked_ids(grants)
    assert sibling not in await revoked_ids(grants)


async def test_revoking_an_exchanged_grant_leaves_its_parent(grants: GrantRepository) -> None:
    root = await new_grant(grants, unique("client"))
    child = await grants.create(client_id="agent-a", user_id="alice", resource=RESOURCE, scope="demo:tools",
                                auth_time=int(time.time()), parent_grant_id=root)
    assert await grants.revoke(child.grant_id, "client") is True
    parent = await grants.get(root)
    assert parent is not None and parent.revoked_at is None


async def test_no_exchange_from_a_revoked_or_unknown_grant(grants: GrantRepository) -> None:
    root = await new_grant(grants, unique("client"))
    await grants.revoke(root, "user")
    for parent in (root, "no-such-grant"):
        with pytest.raises(HandleRefused):
            await grants.create(client_id="agent-a", user_id="alice", resource=RESOURCE, scope="demo:tools",
                                auth_time=int(time.time()), parent_grant_id=parent)
    live_parent = await new_grant(grants, unique("client"))
    actor = await new_grant(grants, unique("agent"))
    await grants.revoke(actor, "client")
    with pytest.raises(HandleRefused):  # the actor token's grant must be live too
        await grants.create(client_id="agent-a", user_id="alice", resource=RESOURCE, scope="demo:tools",
                            auth_time=int(time.time()), parent_grant_id=live_parent, actor_grant_id=actor)
    with pytest.raises(HandleRefused):  # an outside subject (no parent grant) with a revoked actor
        await grants.create(client_id="agent-a", user_id="ext-user", resource=RESOURCE, scope="demo:tools",
                            auth_time=int(time.time()), actor_grant_id=actor)
    live_actor = await new_grant(grants, unique("agent"))
    assert (await grants.create(client_id="agent-a", user_id="ext-user", resource=RESOURCE, scope="demo:tools",
                                auth_time=int(time.time()), actor_grant_id=live_actor)).parent_grant_id is None
    made = await grants.create(client_id="agent-a", user_id="alice", resource=RESOURCE, scope="demo:tools",
                               auth_time=int(time.time()), parent_grant_id=live_parent, actor_grant_id=live_actor)
    assert (await grants.get(made.grant_id)) == made


async def test_consents(db: Database) -> None:
    user = await UserRepository(db.engine).add(unique("dave"), "pw")
    consents = ConsentRepository(db.engine)
    client_id = unique("client")
    assert await consents.covers(user.user_id, client_id, RESOURCE, {"a"}) is False
    await consents.grant(user.user_id, client_id, RESOURCE, {"a"})
    assert await consents.covers(user.user_id, client_id, RESOURCE, {"a"}) is True
    assert await consents.covers(user.user_id, client_id, RESOURCE, set()) is True
    assert await consents.covers(user.user_id, client_id, RESOURCE, {"a", "b"}) is False
    await consents.grant(user.user_id, client_id, RESOURCE, {"b"})
    assert await consents.covers(user.user_id, client_id, RESOURCE, {"a", "b"}) is True
    assert await consents.covers(user.user_id, client_id, RESOURCE, {"a", "b", "c"}) is False
    assert await consents.covers(user.user_id, unique("client"), RESOURCE, {"a"}) is False
    assert await consents.covers(user.user_id, client_id, RESOURCE + "2", {"a"}) is False
    other = await UserRepository(db.engine).add(unique("erin"), "pw")
    assert await consents.covers(other.user_id, client_id, RESOURCE, {"a"}) is False


# --- login sessions and pending requests ------------------------------------------------------------


async def test_login_sessions(db: Database) -> None:
    user = await UserRepository(db.engine).add(unique("frank"), "pw")
    sessions = SessionRepository(db.engine)
    session_id = await sessions.start(user.user_id, 3600)
    found = await sessions.find(session_id)
    assert found is not None
    assert found.user_id == user.user_id
    assert await sessions.find(session_id + "x") is None
    expired = await sessions.start(user.user_id, -5)
    assert await sessions.find(expired) is None


async def test_authorization_requests(db: Database) -> None:
    sessions = SessionRepository(db.engine)
    params = {"client_id": "c", "scope": "demo:tools", "resource": RESOURCE, "nested": {"list": [1, 2]}}
    request_id = await sessions.save_request("c", params, 600)
    assert await sessions.load_request(request_id) == params
    assert await sessions.load_request(request_id) == params
    assert await sessions.consume_request(request_id) is True
    assert await sessions.consume_request(request_id) is False
    assert await sessions.load_request(request_id) is None
    assert await sessions.consume_request("no-such-request") is False


async def test_concurrent_request_consumption(db: Database) -> None:
    sessions = SessionRepository(db.engine)
    request_id = await sessions.save_request("c", {"x": 1}, 600)
    results = await asyncio.gather(*(sessions.consume_request(request_id) for _ in range(4)))
    assert sorted(results) == [False, False, False, True]


async def test_expired_request_not_loadable(db: Database) -> None:
    sessions = SessionRepository(db.engine)
    request_id = await sessions.save_request("c", {"x": 1}, -5)
    assert await sessions.load_request(request_id) is None


# --- the gateway's revocation list ------------------------------------------------------------------


async def test_revocation_list_refresh(grants: GrantRepository) -> None:
    grant_id = await new_grant(grants, unique("client"))
    other = await new_grant(grants, unique("client"))
    revocations = RevocationList(grants, max_staleness=60)
    await revocations.refresh()
    assert revocations.is_revoked(grant_id) is False
    await grants.revoke(grant_id, "user")
    assert revocations.is_revoked(grant_id) is False  # not refreshed yet
    await revocations.refresh()
    assert revocations.is_revoked(grant_id) is True
    assert revocations.is_revoked(other) is False
    await revocations.refresh()
    assert revocations.is_revoked(grant_id) is True


async def test_revocation_list_never_refreshed_is_unavailable(grants: GrantRepository) -> None:
    revocations = RevocationList(grants, max_staleness=0.001)
    with pytest.raises(RevocationsUnavailable):
        revocations.is_revoked("any-grant")


async def test_revocation_list_goes_stale(grants: GrantRepository) -> None:
    with clock.frozen() as frozen:
        revocations = RevocationList(grants, max_staleness=0.2)
        await revocations.refresh()
        assert revocations.is_revoked("any-grant") is False
        frozen.advance(0.1)
        assert revocations.is_revoked("any-grant") is False  # within the bound: still fresh
        frozen.advance(0.2)
        with pytest.raises(RevocationsUnavailable):
            revocations.is_revoked("any-grant")
        await revocations.refresh()
        assert revocations.is_revoked("any-grant") is False


async def test_revocation_list_polls(grants: GrantRepository) -> None:
    grant_id = await new_grant(grants, unique("client"))
    revocations = RevocationList(grants, max_staleness=5, interval=0.05)
    await revocations.start()
    try:
        await grants.revoke(grant_id, "user")
        for _ in range(40):
            if revocations.is_revoked(grant_id):
                break
            await asyncio.sleep(0.05)
        assert revocations.is_revoked(grant_id) is True
    finally:
        await revocations.stop()
