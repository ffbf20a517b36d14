"""Issue 14, item 3 (users), on both backends: federated users keyed by (issuer, sub), their Deputy usernames,
no password for them, disabling (sign-in refused, grants revoked in the same transaction), enabling.

Abuse first: the provider's words (e-mail, ``preferred_username``, groups) never select or impersonate a user.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import event, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.util import await_only

from deputy.gateway.revocations import RevocationList
from deputy.hashing import hash_secret, verify_password
from deputy.storage import tables
from deputy.storage.clients import ClientRepository
from deputy.storage.db import MIGRATIONS, Database
from deputy.storage.grants import GrantRepository, HandleRefused
from deputy.storage.sessions import SessionRepository
from deputy.storage.users import NO_PASSWORD, ProfileRefused, User, UserDisabled, UsernameRefused, UserRepository
from tests.integration.conftest import unique
from tests.support.databases import database_url

RESOURCE = "https://deputy.example.com/mcp/demo"
REDIRECT = "http://127.0.0.1:33418/callback"
CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


@pytest.fixture
def users(db: Database) -> UserRepository:
    return UserRepository(db.engine)


@pytest.fixture
async def grants(db: Database) -> GrantRepository:
    repository = GrantRepository(db.engine, access_token_ttl=600)
    await ClientRepository(db.engine).put(client_id="agent-u", client_name="agent-u", redirect_uris=[REDIRECT],
                                          token_endpoint_auth_method="none", source="cli")
    return repository


async def sign_in(users: UserRepository, idp: str, issuer: str, subject: str, hint: str | None = "alice",
                  email: str | None = "alice@example.com", groups: tuple[str, ...] = ("finance",),
                  claims: dict[str, Any] | None = None, display_name: str | None = "Alice") -> User:
    return await users.upsert_federated(idp, issuer, subject, hint, email, display_name, list(groups), claims or {})


async def grant_for(grants: GrantRepository, user: User) -> str:
    code = await grants.create_with_code(client_id="agent-u", user_id=user.user_id, resource=RESOURCE,
                                         scope="demo:tools", auth_time=1_700_000_000, redirect_uri=REDIRECT,
                                         code_challenge=CHALLENGE, code_ttl=60)
    return (await grants.redeem_code(code, "agent-u")).grant.grant_id


def issuer() -> str:
    return f"https://{unique('idp')}.example.com"


# --- identity: (issuer, sub), never the e-mail --------------------------------------------------------------


async def test_same_email_from_two_issuers_is_two_users(users: UserRepository) -> None:
    okta = await sign_in(users, "okta", issuer(), "00u1", email="alice@example.com")
    entra = await sign_in(users, "entra", issuer(), "00u1", email="alice@example.com")
    assert okta.user_id != entra.user_id
    assert okta.username.endswith("@okta") and entra.username.endswith("@entra")
    assert okta.source == "okta" and entra.source == "entra"


async def test_same_issuer_and_sub_is_one_user_whatever_else_changes(users: UserRepository) -> None:
    iss = issuer()
    first = await sign_in(users, "kc", iss, "sub-1", hint="alice", email="alice@example.com", groups=("finance",))
    again = await sign_in(users, "kc", iss, "sub-1", hint="mallory", email="mallory@example.com",
                          groups=("ops", "admins"), claims={"dept": "ops"}, display_name="M")
    assert again.user_id == first.user_id
    assert again.username == first.username  # chosen once: a new hint never renames her
    assert (again.email, again.groups, dict(again.claims), again.display_name) == \
        ("mallory@example.com", ("admins", "ops"), {"dept": "ops"}, "M")  # the profile is refreshed
    assert await users.get(first.user_id) == again


async def test_same_sub_at_another_issuer_is_another_user(users: UserRepository) -> None:
    a = await sign_in(users, "kc", issuer(), "shared-sub")
    b = await sign_in(users, "kc", issuer(), "shared-sub")
    assert a.user_id != b.user_id and a.username != b.username


# --- usernames: no impersonation by choosing the username claim ---------------------------------------------


async def test_hint_equal_to_a_local_username_never_becomes_her(users: UserRepository) -> None:
    local_name = unique("carol")
    carol = await users.add(local_name, "carol's passphrase")
    federated = await sign_in(users, "evil", issuer(), unique("s"), hint=local_name)
    assert federated.user_id != carol.user_id
    assert federated.username != local_name and federated.username.endswith("@evil")
    assert await users.authenticate(local_name, "carol's passphrase") == carol  # untouched


async def test_hint_equal_to_another_idps_username(users: UserRepository) -> None:
    okta_alice = await sign_in(users, "okta", issuer(), unique("s"), hint=unique("alice"))
    # A user of another IdP claims the full name of okta's user, '@okta' and all.
    evil = await sign_in(users, "evil", issuer(), unique("s"), hint=okta_alice.username)
    assert evil.user_id != okta_alice.user_id
    assert evil.username.endswith("@evil") and evil.username != okta_alice.username
    # And one of the same IdP (another sub) with the same hint gets a name of her own.
    label = okta_alice.username.split("@")[0]
    twin = await sign_in(users, "okta", issuer(), unique("s"), hint=label)
    assert twin.user_id != okta_alice.user_id and twin.username == f"{label}-2@okta"


async def test_local_usernames_cannot_take_the_federated_form(users: UserRepository) -> None:
    for name in ("alice@okta", "", "x" * 129, "bell\x07", "esc\x1b[2J", "rlo\u202e"):
        with pytest.raises(UsernameRefused):
            await users.add(name, "pw")


@pytest.mark.parametrize("hint, label", [
    ("Alice.Smith@Example.com", "alice.smith"),
    ("\x1b]52;c;aGVsbG8=\x07evil\u202e", "52-c-agvsbg8-evil"),
    ("\uff41\uff4c\uff49\uff43\uff45", "alice"),  # NFKC: full-width letters are the same name
    ("\u0430lice", "lice"),  # a Cyrillic a is not an a: dropped, never a look-alike
    ("x[/][conceal]", "x-conceal"),
    ("", "user"),
    (None, "user"),
    ("@@@", "user"),
])
async def test_hostile_hints_become_safe_labels(users: UserRepository, hint: str | None, label: str) -> None:
    idp = unique("kc")  # a provider of its own: the plain label is free
    user = await sign_in(users, idp, issuer(), unique("s"), hint=hint)
    assert user.username == f"{label}@{idp}"
    assert user.username.isascii() and user.username.isprintable()


async def test_huge_hint_is_bounded(users: UserRepository) -> None:
    user = await sign_in(users, "kc", issuer(), unique("s"), hint="a" * 100_000)
    assert len(user.username) <= 64 + len("@kc")
    again = await sign_in(users, "kc", issuer(), unique("s"), hint="a" * 100_000)
    assert again.username != user.username and len(again.username) <= 64 + len("@kc")


@pytest.mark.parametrize("change", [
    {"subject": "s" * 256}, {"subject": ""}, {"subject": "sub\x00"}, {"email": "a" * 321}, {"email": "a@b\r\nc"},
    {"groups": ["g"] * 513}, {"groups": ["g" * 257]}, {"groups": [1]}, {"claims": {"big": "x" * 20_000}},
    {"claims": {"f": float("nan")}}, {"claims": {"o": object()}},
])
async def test_profile_out_of_bounds_is_refused(users: UserRepository, change: dict[str, Any]) -> None:
    fields: dict[str, Any] = dict(idp_name="kc", issuer=issuer(), subject=unique("s"), username_hint="alice",
                                  email=None, display_name=None, groups=[], claims={})
    fields.update(change)
    with pytest.raises(ProfileRefused):
        await users.upsert_federated(**fields)


async def test_long_display_name_is_cut(users: UserRepository) -> None:
    user = await sign_in(users, "kc", issuer(), unique("s"), display_name="N" * 5000)
    assert user.display_name == "N" * 256


# --- no password for a federated user -----------------------------------------------------------------------


async def test_federated_user_cannot_password_sign_in(users: UserRepository) -> None:
    user = await sign_in(users, "kc", issuer(), unique("s"), hint=unique("dan"))
    for password in ("", NO_PASSWORD, "deputy-no-such-user", "anything"):
        assert await users.authenticate(user.username, password) is None
    # Nor can a password be set for her (the demo's `set_password` path).
    assert await users.set_password(user.username, "chosen") is False
    assert await users.authenticate(user.username, "chosen") is None


# --- concurrent first sign-ins -----------------------------------------------------------------------------


async def test_concurrent_first_sign_ins_make_one_user(db: Database) -> None:
    """Ten engines' worth of first sign-ins of the same (issuer, sub), and of ten subs with one hint, at once."""
    iss, sub, hint = issuer(), unique("s"), unique("eve")
    engines = [Database(db.url) for _ in range(4)]
    try:
        repositories = [UserRepository(d.engine) for d in engines]
        for _ in range(10):  # a few rounds: the losers' paths (insert does nothing, row appears late) vary
            subject, label = unique("s"), unique("z")
            same = await asyncio.gather(*(sign_in(repositories[i % 4], "kc", iss, subject, hint=label)
                                          for i in range(12)))
            assert len({u.user_id for u in same}) == 1 and len({u.username for u in same}) == 1
            assert not any(u.disabled for u in same)
        same = await asyncio.gather(*(sign_in(repositories[i % 4], "kc", iss, sub, hint=hint) for i in range(12)))
        assert len({u.user_id for u in same}) == 1 and not any(u.disabled for u in same)
        others = await asyncio.gather(*(sign_in(repositories[i % 4], "kc", iss, unique("s"), hint=hint)
                                        for i in range(8)))
        names = {u.username for u in others} | {same[0].username}
        assert len(names) == 9  # every sub its own name, none shared
    finally:
        for d in engines:
            await d.dispose()
    listed = [u for u in await UserRepository(db.engine).list() if u.username.startswith(hint)]
    assert len(listed) == 9


async def test_first_sign_in_committed_between_update_and_read(postgres_url: str) -> None:
    """PostgreSQL, READ COMMITTED: another first sign-in of the same (issuer, sub) commits after this one's UPDATE
    found no row and before its read found hers. Hers is returned and refreshed; she is not taken for disabled."""
    database = Database(postgres_url)
    await database.migrate()
    blocker = await asyncpg.connect(postgres_url.replace("postgresql+asyncpg://", "postgresql://"))
    iss, sub = issuer(), unique("s")
    try:
        transaction = blocker.transaction()
        await transaction.start()
        await blocker.execute(
            "INSERT INTO users (user_id, username, password_hash, created_at, source, issuer, subject) "
            "VALUES ('winner', 'winner@kc', $1, 1, 'kc', $2, $3)", NO_PASSWORD, iss, sub)
        committed: list[str] = []

        def commit_after_update(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
            if statement.startswith("UPDATE users") and not committed:
                committed.append(statement)
                await_only(transaction.commit())  # inside SQLAlchemy's greenlet: runs on the event loop

        event.listen(database.engine.sync_engine, "after_cursor_execute", commit_after_update)
        user = await sign_in(UserRepository(database.engine), "kc", iss, sub, email="late@example.com")
        assert committed and user.user_id == "winner" and not user.disabled and user.email == "late@example.com"
    finally:
        await blocker.close()
        await database.dispose()


# --- disabling and enabling --------------------------------------------------------------------------------


async def test_disable_revokes_grants_and_blocks_sign_in(db: Database, users: UserRepository,
                                                         grants: GrantRepository) -> None:
    iss, sub = issuer(), unique("s")
    fed = await sign_in(users, "kc", iss, sub, hint=unique("fay"))
    local = await users.add(unique("gus"), "gus's passphrase")
    bystander = await users.add(unique("hal"), "hal's passphrase")
    grant_ids = [await grant_for(grants, fed), await grant_for(grants, fed), await grant_for(grants, local)]
    kept = await grant_for(grants, bystander)
    sessions = SessionRepository(db.engine)
    session = await sessions.start(local.user_id, 600)
    view = RevocationList(grants, max_staleness=60)  # the gateway's view
    await view.refresh()
    assert not any(view.is_revoked(g) for g in grant_ids)

    assert await users.disable(fed.username, grants) == 2
    assert await users.disable(local.username, grants) == 1
    assert await users.disable(unique("nobody"), grants) is None
    await view.refresh()
    assert all(view.is_revoked(g) for g in grant_ids) and not view.is_revoked(kept)

    with pytest.raises(UserDisabled):
        await sign_in(users, "kc", iss, sub, email="changed@example.com")
    assert (await users.get(fed.user_id)).email == fed.email  # type: ignore[union-attr]  # not refreshed
    assert await users.authenticate(local.username, "gus's passphrase") is None
    assert await sessions.find(session) is None  # a browser signed in as her is signed out
    with pytest.raises(HandleRefused):  # a sign-in that began before: no new code for her
        await grant_for(grants, local)
    assert (await users.find(local.username)).disabled  # type: ignore[union-attr]

    # Enabling restores sign-in, not the revoked grants.
    assert await users.enable(local.username) is True and await users.enable(fed.username) is True
    assert await users.enable(unique("nobody")) is False
    assert await users.authenticate(local.username, "gus's passphrase") == await users.get(local.user_id)
    assert (await sign_in(users, "kc", iss, sub)).user_id == fed.user_id
    await view.refresh()
    assert all(view.is_revoked(g) for g in grant_ids)
    for grant_id in grant_ids:
        assert (await grants.get(grant_id)).revoked_at is not None  # type: ignore[union-attr]
    assert not (await grants.get(await grant_for(grants, local))).revoked_at  # type: ignore[union-attr]


async def test_disable_while_codes_are_being_made(db: Database, users: UserRepository,
                                                  grants: GrantRepository) -> None:
    """Grants created while she is being disabled: every one either revoked by it or refused after it."""
    user = await users.add(unique("ivy"), "pw")
    before = await grant_for(grants, user)
    extra = [Database(db.url) for _ in range(3)]
    try:
        repositories = [GrantRepository(d.engine, access_token_ttl=600) for d in extra]

        async def make(i: int) -> str | None:
            try:
                return await grant_for(repositories[i % 3], user)
            except HandleRefused:
                return None

        made = await asyncio.gather(*(make(i) for i in range(10)), users.disable(user.username, grants),
                                    *(make(i) for i in range(10, 20)))
    finally:
        for d in extra:
            await d.dispose()
    assert isinstance(made[10], int) and made[10] >= 1
    async with db.engine.connect() as conn:
        rows = (await conn.execute(select(tables.grants.c.grant_id, tables.grants.c.revoked_at)
                                   .where(tables.grants.c.user_id == user.user_id))).all()
    # None was created after it, none is left live.
    assert before in {row.grant_id for row in rows} and all(row.revoked_at is not None for row in rows), rows


# --- migration 0012 over existing local users ---------------------------------------------------------------


@pytest.fixture
def fresh_url(backend: str, tmp_path: Path) -> Iterator[str]:
    with database_url(backend, tmp_path) as value:
        yield value


async def test_migration_from_0011_keeps_local_users(fresh_url: str) -> None:
    """Users, their sessions and consents from before 0012 stay, as local users who sign in as before (on
    SQLite a rebuilt users table would have cascaded into the sessions and consents)."""
    database = Database(fresh_url)
    try:
        async with database.engine.begin() as conn:
            await conn.run_sync(_upgrade_to, "0011")
            await conn.execute(text(
                "INSERT INTO users (user_id, username, password_hash, created_at) VALUES ('u-1', 'olga', :h, 1)"),
                {"h": hash_secret("olga's passphrase")})
            await conn.execute(text("INSERT INTO login_sessions VALUES ('s-hash', 'u-1', 1, 9999999999)"))
            await conn.execute(text(
                "INSERT INTO consents VALUES ('u-1', 'agent', 'https://r.example', 'demo:tools', 1)"))
        await database.migrate()
        users = UserRepository(database.engine)
        olga = await users.authenticate("olga", "olga's passphrase")
        assert olga == User("u-1", "olga") and olga.source == "local" and not olga.disabled
        assert olga.groups == () and dict(olga.claims) == {} and olga.email is None
        async with database.engine.connect() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM login_sessions"))).scalar() == 1
            assert (await conn.execute(text("SELECT count(*) FROM consents"))).scalar() == 1
        # And federated users sit beside her.
        fed = await sign_in(users, "kc", issuer(), "sub", hint="olga")
        assert fed.username == "olga@kc" and await users.authenticate("olga", "olga's passphrase") == olga
    finally:
        await database.dispose()


def _upgrade_to(connection: Connection, revision: str) -> None:
    config = AlembicConfig()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


async def test_every_refused_password_sign_in_costs_one_argon2_run(users: UserRepository,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """No such user, a federated one, a disabled one, a wrong password: each path verifies one real argon2 hash
    (the dummy's when no password can match), so the answer's timing does not say which it was."""
    fed = await sign_in(users, "kc", issuer(), unique("s"), hint=unique("jo"))
    off = await users.add(unique("kim"), "kim's passphrase")
    await users.disable(off.username, GrantRepository(users.engine, access_token_ttl=600))
    on = await users.add(unique("lee"), "lee's passphrase")
    verified: list[str] = []
    real = verify_password

    async def counting(stored: str, presented: str) -> bool:
        verified.append(stored)
        return await real(stored, presented)

    monkeypatch.setattr("deputy.storage.users.verify_password", counting)
    for name, password in ((unique("nobody"), "x"), (fed.username, "x"), (fed.username, "deputy-no-such-user"),
                           (off.username, "kim's passphrase"), (on.username, "wrong")):
        verified.clear()
        assert await users.authenticate(name, password) is None
        assert len(verified) == 1 and verified[0].startswith("$argon2id$"), (name, verified)
