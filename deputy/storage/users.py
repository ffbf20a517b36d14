"""Local users with argon2id password hashes (RFC 9106 parameters from argon2-cffi)."""

from __future__ import annotations

import functools
import uuid
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from deputy.clock import now
from deputy.hashing import hash_secret, verify_password
from deputy.storage.tables import users


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the user does not exist, so both paths cost one argon2 run."""
    return hash_secret("deputy-no-such-user")


@dataclass(frozen=True, slots=True)
class User:
    user_id: str
    username: str


class UserExists(ValueError):
    pass


class UserRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def add(self, username: str, password: str) -> User:
        user = User(user_id=str(uuid.uuid4()), username=username)
        try:
            async with self.engine.begin() as conn:
                await conn.execute(users.insert().values(
                    user_id=user.user_id, username=username, password_hash=hash_secret(password),
                    created_at=now()))
        except IntegrityError:
            raise UserExists(username) from None
        return user

    async def set_password(self, username: str, password: str) -> bool:
        async with self.engine.begin() as conn:
            result = await conn.execute(users.update().where(users.c.username == username)
                                        .values(password_hash=hash_secret(password)))
        return result.rowcount == 1

    async def authenticate(self, username: str, password: str) -> User | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(users).where(users.c.username == username))).first()
        stored = row.password_hash if row is not None else _dummy_hash()
        if not await verify_password(stored, password):
            return None
        return User(row.user_id, row.username) if row is not None else None

    async def get(self, user_id: str) -> User | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(users).where(users.c.user_id == user_id))).first()
        return User(row.user_id, row.username) if row is not None else None

    async def list(self) -> list[User]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(users).order_by(users.c.username))).all()
        return [User(r.user_id, r.username) for r in rows]
