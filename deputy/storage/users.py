"""Users: local ones with argon2id password hashes (RFC 9106 parameters from argon2-cffi), and federated ones
signed in through an OpenID Provider, keyed by (issuer, ``sub``) (:mod:`deputy.storage.federated_users` gives
the identity and username rules). A federated user has no password; a disabled user signs in neither way
(disabling also revokes her grants: :mod:`deputy.storage.user_status`)."""

from __future__ import annotations

import functools
import unicodedata
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from deputy.clock import now
from deputy.hashing import hash_secret, verify_password
from deputy.storage import federated_users
from deputy.storage.federated_users import NO_PASSWORD, ProfileRefused
from deputy.storage.tables import users

if TYPE_CHECKING:
    from deputy.storage.grants import GrantRepository

__all__ = ["LOCAL", "NO_PASSWORD", "ProfileRefused", "User", "UserDisabled", "UserExists", "UserRepository",
           "UsernameRefused"]

LOCAL = "local"


@functools.cache
def _dummy_hash() -> str:
    """Verified against when no password can match (no such user, a federated or disabled one), so every path
    costs one argon2 run."""
    return hash_secret("deputy-no-such-user")


@dataclass(frozen=True, slots=True)
class User:
    user_id: str
    username: str
    source: str = LOCAL  # "local", or the name of the identity provider she signs in through
    email: str | None = None  # the provider's profile (outside text), refreshed at each sign-in
    display_name: str | None = None
    groups: tuple[str, ...] = ()
    claims: Mapping[str, Any] = field(default_factory=dict, hash=False)  # the configured extra claims carried
    disabled: bool = False
    # A federated user's identity (OpenID Connect Core §2): what approver_subjects names (deputy.config_approvals);
    # None for a local user.
    issuer: str | None = None
    subject: str | None = None

    @property
    def is_local(self) -> bool:
        return self.source == LOCAL


class UserExists(ValueError):
    pass


class UsernameRefused(ValueError):
    """A local username that is empty, too long, not printable, or has an ``@`` (kept for federated users)."""


class UserDisabled(Exception):
    """A disabled user's sign-in through an identity provider: refused (her profile is not refreshed)."""

    def __init__(self, user: User) -> None:
        super().__init__(f"user {user.username} is disabled")
        self.user = user


class UserRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def add(self, username: str, password: str) -> User:
        """A local user; :class:`UsernameRefused` for a name no local user may have."""
        if not username or len(username) > 128 or "@" in username or \
                any(unicodedata.category(c)[0] == "C" for c in username):
            raise UsernameRefused("a local username is 1 to 128 printable characters without '@'")
        user = User(user_id=str(uuid.uuid4()), username=username)
        try:
            async with self.engine.begin() as conn:
                await conn.execute(users.insert().values(
                    user_id=user.user_id, username=username, password_hash=hash_secret(password),
                    created_at=now(), source=LOCAL))
        except IntegrityError:
            raise UserExists(username) from None
        return user

    async def set_password(self, username: str, password: str) -> bool:
        """Set a local user's password; False for an unknown name or a federated user (who has none)."""
        async with self.engine.begin() as conn:
            result = await conn.execute(update(users).where(and_(users.c.username == username,
                                                                 users.c.source == LOCAL))
                                        .values(password_hash=hash_secret(password)))
        return result.rowcount == 1

    async def authenticate(self, username: str, password: str) -> User | None:
        """The local, enabled user with this username and password; else None, after the same one argon2 run."""
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(users).where(users.c.username == username))).first()
        usable = row is not None and row.source == LOCAL and row.disabled_at is None \
            and row.password_hash != NO_PASSWORD
        stored = row.password_hash if usable and row is not None else _dummy_hash()
        if not await verify_password(stored, password) or not usable:
            return None
        return _user(row)

    async def get(self, user_id: str) -> User | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(users).where(users.c.user_id == user_id))).first()
        return _user(row) if row is not None else None

    async def find(self, username: str) -> User | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(users).where(users.c.username == username))).first()
        return _user(row) if row is not None else None

    async def list(self) -> list[User]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(users).order_by(users.c.username))).all()
        return [_user(r) for r in rows]

    async def upsert_federated(self, idp_name: str, issuer: str, subject: str, username_hint: str | None,
                               email: str | None, display_name: str | None, groups: Sequence[str],
                               claims: Mapping[str, Any]) -> User:
        """The user (issuer, subject), created at her first sign-in, her profile refreshed at every later one.

        Raises :class:`UserDisabled` for a disabled user, :class:`ProfileRefused` for a profile that cannot be
        stored (:mod:`deputy.storage.federated_users`). Two first sign-ins at once make one user: the loser's
        insert does nothing, and it refreshes the winner's row."""
        profile = federated_users.checked_profile(issuer, subject, email, display_name, groups, claims)
        for _ in range(4):
            row, refreshed = await federated_users.refresh(self.engine, idp_name, issuer, subject, profile)
            if refreshed:
                return _user(row)
            if row is not None and row.disabled_at is not None:
                raise UserDisabled(_user(row))
            if row is None:
                await federated_users.create(self.engine, idp_name, issuer, subject, username_hint, profile)
        raise ProfileRefused("the user could not be stored")  # only if her row kept changing in between

    async def disable(self, username: str, grants: GrantRepository) -> int | None:
        """Disable a user and revoke every grant she holds, in one transaction
        (:meth:`~deputy.storage.grants.GrantRepository.disable_user`); the number revoked, None if unknown."""
        return await grants.disable_user(username)

    async def enable(self, username: str) -> bool:
        """Let a disabled user sign in again (her revoked grants stay revoked); False for an unknown name."""
        async with self.engine.begin() as conn:
            result = await conn.execute(update(users).where(users.c.username == username).values(disabled_at=None))
        return result.rowcount == 1


def _user(row: Any) -> User:
    m = row._mapping
    return User(m["user_id"], m["username"], source=m["source"], email=m["email"], display_name=m["display_name"],
                groups=tuple(m["groups"] or ()), claims=dict(m["claims"] or {}), disabled=m["disabled_at"] is not None,
                issuer=m["issuer"], subject=m["subject"])
