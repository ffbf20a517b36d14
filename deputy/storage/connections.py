"""Each user's connections to ``credentials = "oauth"`` upstreams, Deputy's clients there, and connections waiting
for the authorization server's callback (issue 15; the tables of migration 0014).

Tokens and client secrets arrive here sealed (:mod:`deputy.connections.vault`) and leave sealed: this module never
sees one in clear. Each sealed value is bound to its row and field by the vault's additional authenticated data,
whose text :func:`token_context` and :func:`client_secret_context` make: whoever seals and whoever re-seals
(``deputy vault rotate-key``) must name a field the same way; a value copied to another row or field does not open.

A started connection (``connection_flows``) is keyed by the SHA-256 of its ``state`` and bound to the browser that
started it by the SHA-256 of a random cookie (RFC 6749 §10.12; RFC 9700 §4.7.1). :meth:`ConnectionRepository.
take_flow` deletes the row it returns in the statement that reads it, so a ``state`` is used once whatever
replicas race for it; another browser presenting it neither gets nor spends it.

A refresh is single-flight: :meth:`ConnectionRepository.refreshing` (:mod:`deputy.storage.connection_refresh`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import and_, delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Row
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from deputy.clock import now
from deputy.handles import handle_hash
from deputy.storage.connection_refresh import (
    HeldConnection,
    RefreshBusy,
    SingleFlight,
    StoredConnection,
    stored_connection,
)
from deputy.storage.tables import connection_flows, upstream_clients, upstream_connections

__all__ = ["ConnectionRepository", "HeldConnection", "RefreshBusy", "StoredClient", "StoredConnection",
           "WaitingConnection", "client_secret_context", "token_context"]

TokenField = Literal["access_token", "refresh_token"]
RESEAL_BATCH = 200  # rows read per statement while re-sealing


def token_context(user_id: str, server: str, field: TokenField) -> str:
    """The additional authenticated data of a connection's sealed token: its row (user, server) and field.

    Joined by NUL, which none of the parts can hold, so no two rows' contexts are equal. The one definition:
    the service seals with it (deputy.connections.refresh, connect_flow), ``deputy vault rotate-key`` re-seals."""
    return f"deputy-connection\x00{user_id}\x00{server}\x00{field}"


def client_secret_context(server: str, issuer: str) -> str:
    """The additional authenticated data of a registered client's sealed secret: its row (server, issuer)."""
    return f"deputy-client\x00{server}\x00{issuer}\x00client_secret"


@dataclass(frozen=True, slots=True)
class StoredClient:
    """Deputy's identity at authorization server ``issuer`` for upstream ``server``; ``client_secret`` sealed."""

    server: str
    issuer: str
    client_id: str
    client_secret: bytes | None
    auth_method: str
    source: str  # registered@DIGEST (of the redirect URI it was registered with); "registered": an older version's
    registered_at: int


@dataclass(frozen=True, slots=True)
class WaitingConnection:
    """A connection started by ``user_id`` for ``server``, as its starter kept it (``pending``: JSON)."""

    user_id: str
    server: str
    pending: Mapping[str, Any]


def _client(row: Row[Any]) -> StoredClient:
    return StoredClient(server=row.server, issuer=row.issuer, client_id=row.client_id,
                        client_secret=bytes(row.client_secret) if row.client_secret is not None else None,
                        auth_method=row.auth_method, source=row.source, registered_at=row.registered_at)


def _upsert(conn: AsyncConnection) -> Any:
    return pg_insert if conn.dialect.name == "postgresql" else sqlite_insert


def _key(user_id: str, server: str) -> Any:
    return and_(upstream_connections.c.user_id == user_id, upstream_connections.c.server == server)


class ConnectionRepository:
    def __init__(self, engine: AsyncEngine, refresh_wait: float = 30.0) -> None:
        """``refresh_wait``: seconds a refresh waits for another one of the same connection (this process's or,
        on PostgreSQL, another replica's) before :class:`RefreshBusy`."""
        self.engine = engine
        self.single_flight = SingleFlight(engine, refresh_wait)

    # -- connections --------------------------------------------------------------------------------------------

    async def get(self, user_id: str, server: str) -> StoredConnection | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(upstream_connections).where(_key(user_id, server)))).first()
        return stored_connection(row) if row is not None else None

    async def put(self, connection: StoredConnection) -> StoredConnection:
        """Store a new connection, or replace the user's connection to that server (a reconnect): the row as
        stored, with its new ``version``. ``created_at`` is kept from the given value."""
        values = {
            "status": connection.status, "issuer": connection.issuer, "client_id": connection.client_id,
            "scope": connection.scope, "wanted_scope": connection.wanted_scope,
            "access_token": connection.access_token, "refresh_token": connection.refresh_token,
            "expires_at": connection.expires_at, "created_at": connection.created_at,
            "refreshed_at": connection.refreshed_at, "token_digest": connection.token_digest}
        async with self.engine.begin() as conn:
            insert = _upsert(conn)
            statement = insert(upstream_connections).values(
                user_id=connection.user_id, server=connection.server, version=1, **values)
            row = (await conn.execute(statement.on_conflict_do_update(
                index_elements=[upstream_connections.c.user_id, upstream_connections.c.server],
                set_={**values, "version": upstream_connections.c.version + 1},
            ).returning(upstream_connections))).one()
        return stored_connection(row)

    async def mark_broken(self, user_id: str, server: str) -> bool:
        """The upstream refused the connection's refresh: the next call asks her to reconnect. False if none."""
        async with self.engine.begin() as conn:
            result = await conn.execute(update(upstream_connections).where(_key(user_id, server)).values(
                status="broken", version=upstream_connections.c.version + 1))
        return result.rowcount == 1

    async def set_wanted_scope(self, user_id: str, server: str, scope: str | None) -> bool:
        """Remember the scope a ``403 insufficient_scope`` asked for (step-up), or forget it (None)."""
        async with self.engine.begin() as conn:
            result = await conn.execute(update(upstream_connections).where(_key(user_id, server)).values(
                wanted_scope=scope, version=upstream_connections.c.version + 1))
        return result.rowcount == 1

    async def delete(self, user_id: str, server: str) -> StoredConnection | None:
        """Remove the connection and return it (its tokens, to revoke at the upstream); None if there was none.
        Two replicas disconnecting at once: one gets the row."""
        async with self.engine.begin() as conn:
            row = (await conn.execute(delete(upstream_connections).where(_key(user_id, server))
                                      .returning(upstream_connections))).first()
        return stored_connection(row) if row is not None else None

    async def delete_for_user(self, user_id: str) -> list[StoredConnection]:
        """Remove every connection of ``user_id`` and return them."""
        async with self.engine.begin() as conn:
            rows = (await conn.execute(delete(upstream_connections).where(upstream_connections.c.user_id == user_id)
                                       .returning(upstream_connections))).all()
        return sorted((stored_connection(r) for r in rows), key=lambda c: c.server)

    def refreshing(self, user_id: str, server: str) -> AbstractAsyncContextManager[HeldConnection]:
        """``async with repository.refreshing(user, server) as held:`` — one refresh of this connection at a time,
        here and across replicas on PostgreSQL (:class:`~deputy.storage.connection_refresh.SingleFlight`)."""
        return self.single_flight.hold(user_id, server)

    # -- Deputy's clients at upstream authorization servers ---------------------------------------------------------

    async def registered_client(self, server: str, issuer: str) -> StoredClient | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(upstream_clients).where(and_(
                upstream_clients.c.server == server, upstream_clients.c.issuer == issuer)))).first()
        return _client(row) if row is not None else None

    async def put_registered_client(self, client: StoredClient) -> None:
        values = {"client_id": client.client_id, "client_secret": client.client_secret,
                  "auth_method": client.auth_method, "source": client.source, "registered_at": client.registered_at}
        async with self.engine.begin() as conn:
            statement = _upsert(conn)(upstream_clients).values(server=client.server, issuer=client.issuer, **values)
            await conn.execute(statement.on_conflict_do_update(
                index_elements=[upstream_clients.c.server, upstream_clients.c.issuer], set_=values))

    # -- connections waiting for the callback -------------------------------------------------------------------

    async def add_flow(self, state: str, browser: str, user_id: str, server: str, pending: Mapping[str, Any],
                       expires_at: int) -> None:
        """Keep ``pending`` (JSON; never a token: the verifier is worth nothing without the upstream's code) under
        ``state`` for ``user_id`` in the browser holding cookie value ``browser``; drops expired flows."""
        async with self.engine.begin() as conn:
            await conn.execute(delete(connection_flows).where(connection_flows.c.expires_at < now()))
            await conn.execute(connection_flows.insert().values(
                state_hash=handle_hash(state), browser_hash=handle_hash(browser), user_id=user_id, server=server,
                pending=dict(pending), expires_at=expires_at))

    async def take_flow(self, state: str, browser: str | None) -> WaitingConnection | Literal["unknown", "foreign"]:
        """The connection ``state`` names, removed; ``foreign`` when another browser started it (it stays for that
        one), ``unknown`` when there is none (never made, used already, or expired)."""
        key = connection_flows.c.state_hash == handle_hash(state)
        live = connection_flows.c.expires_at >= now()
        async with self.engine.begin() as conn:
            if browser:
                row = (await conn.execute(delete(connection_flows).where(and_(
                    key, live, connection_flows.c.browser_hash == handle_hash(browser))).returning(
                    connection_flows.c.user_id, connection_flows.c.server, connection_flows.c.pending))).first()
                if row is not None:
                    return WaitingConnection(row.user_id, row.server, dict(row.pending))
            other = (await conn.execute(select(connection_flows.c.state_hash).where(and_(key, live)))).first()
        return "foreign" if other is not None else "unknown"

    async def purge_expired_flows(self) -> int:
        async with self.engine.begin() as conn:
            result = await conn.execute(delete(connection_flows).where(connection_flows.c.expires_at < now()))
        return result.rowcount

    # -- re-sealing (deputy vault rotate-key) -------------------------------------------------------------------

    async def all_connections(self) -> AsyncIterator[StoredConnection]:
        """Every connection, a batch per statement (keyset order), for re-sealing."""
        after: tuple[str, str] | None = None
        while True:
            query = select(upstream_connections).order_by(
                upstream_connections.c.user_id, upstream_connections.c.server).limit(RESEAL_BATCH)
            if after is not None:
                query = query.where((upstream_connections.c.user_id > after[0]) | and_(
                    upstream_connections.c.user_id == after[0], upstream_connections.c.server > after[1]))
            async with self.engine.connect() as conn:
                rows = (await conn.execute(query)).all()
            for row in rows:
                yield stored_connection(row)
            if len(rows) < RESEAL_BATCH:
                return
            after = (rows[-1].user_id, rows[-1].server)

    async def all_registered_clients(self) -> list[StoredClient]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(upstream_clients).order_by(
                upstream_clients.c.server, upstream_clients.c.issuer))).all()
        return [_client(r) for r in rows]

    async def reseal_connection(self, was: StoredConnection, access_token: bytes,
                                refresh_token: bytes | None) -> bool:
        """Replace the sealed tokens of ``was`` with the same tokens sealed anew, unless the row changed since it was
        read (False: read it again). The version stays: a refresh holding the row is not made to fail by this."""
        condition = and_(_key(was.user_id, was.server), upstream_connections.c.version == was.version,
                         upstream_connections.c.access_token == was.access_token)
        async with self.engine.begin() as conn:
            result = await conn.execute(update(upstream_connections).where(condition).values(
                access_token=access_token, refresh_token=refresh_token))
        return result.rowcount == 1

    async def reseal_client(self, was: StoredClient, client_secret: bytes) -> bool:
        """Replace the sealed secret of ``was``, unless it changed since it was read."""
        if was.client_secret is None:
            return False
        async with self.engine.begin() as conn:
            result = await conn.execute(update(upstream_clients).where(and_(
                upstream_clients.c.server == was.server, upstream_clients.c.issuer == was.issuer,
                upstream_clients.c.client_secret == was.client_secret)).values(client_secret=client_secret))
        return result.rowcount == 1

    async def list(self, user_id: str | None = None, server: str | None = None) -> list[StoredConnection]:
        query = select(upstream_connections).order_by(upstream_connections.c.user_id, upstream_connections.c.server)
        if user_id is not None:
            query = query.where(upstream_connections.c.user_id == user_id)
        if server is not None:
            query = query.where(upstream_connections.c.server == server)
        async with self.engine.connect() as conn:
            return [stored_connection(r) for r in (await conn.execute(query)).all()]
