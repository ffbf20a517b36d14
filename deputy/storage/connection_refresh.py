"""Single-flight refresh of an upstream connection: one refresh at a time per (user, server), in this process and
across replicas on PostgreSQL.

Upstream refresh tokens are often rotated on use (RFC 9700 §4.14.2; OAuth 2.1 §4.3.1): two refreshes racing with
the same refresh token would have the second refused — or worse, taken as reuse and the whole grant revoked. So a
caller that finds the access token near expiry refreshes inside :meth:`SingleFlight.hold`:

- in this process, an :class:`asyncio.Lock` per connection: concurrent calls for it queue;
- on PostgreSQL, additionally a transaction holding ``SELECT … FOR UPDATE`` on the connection's row for as long as
  the refresh takes, so another replica's refresh waits for this one to commit;
- the holder gets the row as read under the lock (:attr:`HeldConnection.current`): a waiter that finds the token
  already refreshed by the one before it does not refresh again;
- waiting is bounded (``refresh_wait``; PostgreSQL's ``lock_timeout``): past it, :class:`RefreshBusy`.

SQLite has one writer per database, and a write transaction held across an upstream request would stall every
other write; there the row is read without a lock and :meth:`HeldConnection.store` writes only if its ``version``
is still the one read. Across the processes of ``serve --workers N`` on one SQLite file the refresh is held by
:mod:`deputy.connections.refresh_lock` (a file lock per connection), which this store's reader runs under.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, select, text, update
from sqlalchemy.engine import Row
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from deputy.storage.tables import upstream_connections

LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL: lock_timeout passed


@dataclass(frozen=True, slots=True)
class StoredConnection:
    """One user's connection to one upstream as stored; ``access_token`` and ``refresh_token`` sealed
    (:mod:`deputy.connections.vault`, contexts from :func:`deputy.storage.connections.token_context`)."""

    user_id: str
    server: str
    status: str  # active | broken
    issuer: str
    client_id: str
    scope: str | None
    wanted_scope: str | None
    access_token: bytes
    refresh_token: bytes | None
    expires_at: int | None
    created_at: int
    refreshed_at: int | None
    token_digest: str  # SHA-256 (hex) of the access token: what an audit record may name
    version: int = 0


def stored_connection(row: Row[Any]) -> StoredConnection:
    """A row of ``upstream_connections``."""
    return StoredConnection(
        user_id=row.user_id, server=row.server, status=row.status, issuer=row.issuer, client_id=row.client_id,
        scope=row.scope, wanted_scope=row.wanted_scope, access_token=bytes(row.access_token),
        refresh_token=bytes(row.refresh_token) if row.refresh_token is not None else None,
        expires_at=row.expires_at, created_at=row.created_at, refreshed_at=row.refreshed_at,
        token_digest=row.token_digest, version=row.version)


class RefreshBusy(Exception):
    """Another refresh of the same connection (here or on another replica) did not finish within the wait."""

    def __init__(self, user_id: str, server: str, waited: float) -> None:
        super().__init__(f"the connection of user {user_id} to {server} is being refreshed elsewhere; gave up "
                         f"waiting after {waited:g} s")
        self.user_id = user_id
        self.server = server


class HeldConnection:
    """The connection as read while its refresh is held, and the only way to write it meanwhile (on PostgreSQL
    another statement on that row would wait for this very transaction)."""

    def __init__(self, conn: AsyncConnection | None, engine: AsyncEngine, current: StoredConnection | None) -> None:
        self._conn = conn  # PostgreSQL: the transaction holding the row; SQLite: None
        self._engine = engine
        self.current = current

    async def store(self, refreshed: StoredConnection) -> bool:
        """Write the refreshed tokens, expiry, scope, digest and status of ``refreshed`` (the row's keys and
        ``created_at`` stay); False when the row is gone or was changed since it was read (SQLite). Afterwards
        :attr:`current` is the row as stored."""
        return await self._write(status=refreshed.status, scope=refreshed.scope, wanted_scope=refreshed.wanted_scope,
                                 access_token=refreshed.access_token, refresh_token=refreshed.refresh_token,
                                 expires_at=refreshed.expires_at, refreshed_at=refreshed.refreshed_at,
                                 token_digest=refreshed.token_digest)

    async def mark_broken(self) -> bool:
        """The upstream refused the refresh: the next call asks her to reconnect."""
        return await self._write(status="broken")

    async def _write(self, **values: object) -> bool:
        was = self.current
        if was is None:
            return False
        statement = update(upstream_connections).where(and_(
            upstream_connections.c.user_id == was.user_id, upstream_connections.c.server == was.server,
            upstream_connections.c.version == was.version)).values(
            **values, version=upstream_connections.c.version + 1).returning(upstream_connections)
        if self._conn is not None:
            row = (await self._conn.execute(statement)).first()
        else:
            async with self._engine.begin() as conn:
                row = (await conn.execute(statement)).first()
        if row is None:
            return False
        self.current = stored_connection(row)
        return True


class SingleFlight:
    def __init__(self, engine: AsyncEngine, wait: float) -> None:
        self.engine = engine
        self.wait = wait
        self.postgres = engine.dialect.name == "postgresql"
        # One lock per connection while anyone holds or awaits it; dropped when nobody does (no growth per key).
        self._locks: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}

    @contextlib.asynccontextmanager
    async def hold(self, user_id: str, server: str) -> AsyncIterator[HeldConnection]:
        """Hold the refresh of (``user_id``, ``server``); what was stored through the handle stands when the block
        ends, even by an exception (the upstream has already rotated the refresh token it was given)."""
        key = (user_id, server)
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            try:
                async with asyncio.timeout(self.wait):
                    await lock.acquire()
            except TimeoutError:
                raise RefreshBusy(user_id, server, self.wait) from None
            try:
                if self.postgres:
                    async with self._row_held(user_id, server) as held:
                        yield held
                else:
                    yield HeldConnection(None, self.engine, await self._read(user_id, server))
            finally:
                lock.release()
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    async def _read(self, user_id: str, server: str) -> StoredConnection | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(upstream_connections).where(and_(
                upstream_connections.c.user_id == user_id, upstream_connections.c.server == server)))).first()
        return stored_connection(row) if row is not None else None

    @contextlib.asynccontextmanager
    async def _row_held(self, user_id: str, server: str) -> AsyncIterator[HeldConnection]:
        async with self.engine.connect() as conn:
            await conn.begin()
            try:
                # Bounded: a replica stuck mid-refresh must not hang every call of hers (SET LOCAL: this transaction).
                await conn.execute(text(f"SET LOCAL lock_timeout = '{int(self.wait * 1000)}ms'"))
                row = (await conn.execute(select(upstream_connections).where(and_(
                    upstream_connections.c.user_id == user_id, upstream_connections.c.server == server))
                    .with_for_update())).first()
            except DBAPIError as exc:
                await conn.rollback()
                if getattr(exc.orig, "sqlstate", None) == LOCK_NOT_AVAILABLE:
                    raise RefreshBusy(user_id, server, self.wait) from None
                raise
            try:
                yield HeldConnection(conn, self.engine, stored_connection(row) if row is not None else None)
            finally:
                await conn.commit()
