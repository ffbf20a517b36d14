"""Known OAuth clients (RFC 7591 §2 metadata), with their trust status.

A client is ``active`` (served), ``pending`` (registered or first seen, waiting for an
admin's approval), ``denied``, or ``removed`` (a client the configuration file still
declares, kept as a record of the operator's removal so that a restart does not bring it
back; any other removed client's row is deleted). Client secrets are stored as argon2id
hashes and registration access tokens (RFC 7592) as SHA-256; neither can be read back.

The status is the operator's decision and the configuration file owns only a config
client's metadata (:meth:`ClientRepository.declare`). Withdrawing a client (deny, remove,
RFC 7592 §2.3 delete) and creating a grant or token for it are made to exclude each other
through the client's row: :func:`withdraw` changes the row first in the transaction that
also revokes the client's grants, and :func:`hold_if_active` reads it, locked, in every
transaction that creates a grant or token. Either the creation commits first (and the
withdrawal, which waited for its lock, revokes what it made) or it sees the new status.

The token endpoint authenticates a client against a remembered copy of its row (:meth:`ClientRepository.remembered`,
active clients only, for :data:`REMEMBER_CLIENT_SECONDS`), never a stale one in effect: the transaction that writes
the grant reads the row it holds (:func:`hold_active_client`) and compares what authentication and the grant
depended on (:func:`same_credentials`); a difference refuses the request, on any replica, whatever this process
remembered. A change made through this process also forgets the copy at once.
"""

from __future__ import annotations

import dataclasses
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Required, TypedDict, Unpack

from sqlalchemy import and_, bindparam, case, delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from deputy.clock import now
from deputy.handles import handle_hash, same_secret
from deputy.hashing import hash_secret, verify_client_secret
from deputy.storage.db import one_writer
from deputy.storage.tables import assertion_jtis, clients

STATUSES = ("active", "pending", "denied", "removed")
WITHDRAWN = ("denied", "removed")  # only an operator lifts these (`deputy clients approve`)
PRUNE_INTERVAL = 60  # seconds between sweeps of expired assertion identifiers
REMEMBER_CLIENT_SECONDS = 30.0  # how long an active client's row is reused to authenticate it
REMEMBERED_CLIENTS_MAX = 10_000
# What client authentication and the choice of grant read from a client's row: compared where the grant is written.
CREDENTIAL_FIELDS = ("client_id", "status", "source", "token_endpoint_auth_method", "client_secret_hash", "jwks",
                     "jwks_uri", "grant_types")


@dataclass(frozen=True, slots=True)
class Client:
    client_id: str
    client_name: str
    redirect_uris: tuple[str, ...]
    grant_types: tuple[str, ...]
    token_endpoint_auth_method: str
    application_type: str
    source: str
    created_at: int
    client_secret_hash: str | None = None
    status: str = "active"
    jwks: Mapping[str, Any] | None = None
    jwks_uri: str | None = None
    registration_access_token_hash: str | None = None
    client_metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def is_public(self) -> bool:
        return self.token_endpoint_auth_method == "none"

    @property
    def is_active(self) -> bool:
        return self.status == "active"

    async def verify_secret(self, secret: str) -> bool:
        if self.client_secret_hash is None:
            return False
        return await verify_client_secret(self.client_secret_hash, secret)

    def verify_registration_access_token(self, token: str) -> bool:
        expected = self.registration_access_token_hash
        return expected is not None and same_secret(handle_hash(token), expected)


def hash_client_secret(secret: str) -> str:
    return hash_secret(secret)


class ClientRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._pruned_at = 0
        self._remembered: OrderedDict[str, tuple[Client, float]] = OrderedDict()
        self._forgotten = 0  # bumped by every forget: a read begun before it must not be remembered

    async def get(self, client_id: str) -> Client | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(clients).where(clients.c.client_id == client_id))).first()
        return _client(row) if row is not None else None

    async def remembered(self, client_id: str) -> Client | None:
        """The client as :meth:`get` returns it, an active one possibly from memory (up to
        :data:`REMEMBER_CLIENT_SECONDS` old). Only for a request whose grant is written with
        ``GrantRepository.create(confirm=client)``, which refuses it if the row has changed since."""
        entry = self._remembered.get(client_id)
        t = time.monotonic()
        if entry is not None and t - entry[1] < REMEMBER_CLIENT_SECONDS:
            return entry[0]
        forgotten = self._forgotten
        client = await self.get(client_id)
        if client is None or not client.is_active:
            # Unknown ids are not kept (memory a caller could fill), nor inactive clients (an approval elsewhere
            # must serve them at once).
            self._remembered.pop(client_id, None)
        elif forgotten == self._forgotten:
            self._remembered[client_id] = (client, t)
            self._remembered.move_to_end(client_id)
            while len(self._remembered) > REMEMBERED_CLIENTS_MAX:
                self._remembered.popitem(last=False)
        return client

    def forget(self, client_id: str | None = None) -> None:
        """Drop the remembered copy of ``client_id`` (every client: None)."""
        self._forgotten += 1
        if client_id is None:
            self._remembered.clear()
        else:
            self._remembered.pop(client_id, None)

    async def list(self, status: str | None = None) -> list[Client]:
        query = select(clients).order_by(clients.c.created_at)
        if status is not None:
            query = query.where(clients.c.status == status)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [_client(r) for r in rows]

    async def put(self, **fields: Unpack[ClientFields]) -> Client:
        """Create the client (``fields`` as :func:`new_client` takes them), or replace it (its status too) when it
        exists."""
        return await self.insert(new_client(**fields))

    async def declare(self, client: Client) -> Client:
        """Write a client the configuration file declares; the client as stored.

        A new one is created as given (``active``). An existing one takes the file's metadata but keeps its
        status and creation time: whether it is served is the operator's decision (deny, remove, approve),
        which a restart must not undo. One statement (an upsert), so a concurrent withdrawal is never
        overwritten by a stale read.
        """
        values = _row(client)
        kept = ("client_id", "status", "created_at")
        async with self.engine.begin() as conn:
            insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
            statement = insert(clients).values(**values)
            await conn.execute(statement.on_conflict_do_update(
                index_elements=[clients.c.client_id],
                set_={name: statement.excluded[name] for name in values if name not in kept}))
            row = (await conn.execute(select(clients).where(clients.c.client_id == client.client_id))).one()
        self.forget(client.client_id)  # after the commit: a read begun before it is not remembered either
        return _client(row)

    async def insert(self, client: Client) -> Client:
        """Write ``client`` as given, replacing any row with its id."""
        values = _row(client)
        async with self.engine.begin() as conn:
            await conn.execute(delete(clients).where(clients.c.client_id == client.client_id))
            await conn.execute(clients.insert().values(**values))
        self.forget(client.client_id)
        return client

    async def set_status(self, client_id: str, status: str) -> bool:
        if status not in STATUSES:
            raise ValueError(f"unknown client status {status!r}")
        async with self.engine.begin() as conn:
            result = await conn.execute(update(clients).where(clients.c.client_id == client_id).values(status=status))
        self.forget(client_id)
        return result.rowcount == 1

    async def remove(self, client_id: str) -> bool:
        async with self.engine.begin() as conn:
            result = await conn.execute(delete(clients).where(clients.c.client_id == client_id))
        self.forget(client_id)
        return result.rowcount == 1

    async def remember_assertion(self, client_id: str, jti: str, expires_at: int) -> bool:
        """Record a client assertion's ``jti``; False when it was seen before (a replay).

        The primary key decides, so two replicas racing with the same assertion cannot both win.
        Expired entries are swept at most every :data:`PRUNE_INTERVAL` seconds; one that is still
        there only refuses an identifier its client should not have reused.
        """
        t = now()
        async with one_writer(self.engine), self.engine.begin() as conn:
            if t - self._pruned_at >= PRUNE_INTERVAL:
                self._pruned_at = t
                await conn.execute(delete(assertion_jtis).where(assertion_jtis.c.expires_at < t))
            insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
            result = await conn.execute(insert(assertion_jtis).values(
                client_id=client_id, jti=jti, expires_at=expires_at).on_conflict_do_nothing())
        return result.rowcount == 1

    async def replace(self, client: Client) -> bool:
        """Write every field of an existing client as given (hashes kept as they are), except that a denied or
        removed status stays (only :meth:`set_status` lifts it); False if it is gone."""
        values: dict[str, Any] = _row(client)
        del values["client_id"]
        # Read before this write, a status may be stale: a withdrawal that committed since stands.
        values["status"] = case((clients.c.status.in_(WITHDRAWN), clients.c.status), else_=client.status)
        async with self.engine.begin() as conn:
            result = await conn.execute(update(clients).where(clients.c.client_id == client.client_id).values(**values))
        self.forget(client.client_id)
        return result.rowcount == 1


class ClientFields(TypedDict, total=False):
    """What a client is created from; the optional fields default as :func:`new_client` says."""

    client_id: Required[str]
    client_name: Required[str]
    redirect_uris: Required[Sequence[str]]
    token_endpoint_auth_method: Required[str]
    source: Required[str]
    application_type: str  # "native"
    grant_types: Sequence[str]  # authorization_code and refresh_token
    client_secret: str | None
    status: str  # "active"
    jwks: Mapping[str, Any] | None
    jwks_uri: str | None
    registration_access_token: str | None
    client_metadata: Mapping[str, Any] | None


def new_client(**fields: Unpack[ClientFields]) -> Client:
    """A client as it is first stored: secrets hashed, created now."""
    status = fields.get("status", "active")
    if status not in STATUSES:
        raise ValueError(f"unknown client status {status!r}")
    secret, jwks, access_token = (fields.get("client_secret"), fields.get("jwks"),
                                  fields.get("registration_access_token"))
    return Client(
        client_id=fields["client_id"],
        client_name=fields["client_name"],
        redirect_uris=tuple(fields["redirect_uris"]),
        grant_types=tuple(fields.get("grant_types", ("authorization_code", "refresh_token"))),
        token_endpoint_auth_method=fields["token_endpoint_auth_method"],
        application_type=fields.get("application_type", "native"),
        source=fields["source"],
        created_at=now(),
        client_secret_hash=hash_client_secret(secret) if secret else None,
        status=status,
        jwks=dict(jwks) if jwks is not None else None,
        jwks_uri=fields.get("jwks_uri"),
        registration_access_token_hash=handle_hash(access_token) if access_token else None,
        client_metadata=dict(fields.get("client_metadata") or {}),
    )


async def hold_if_active(conn: AsyncConnection, client_id: str) -> bool:
    """Inside a transaction that creates a grant or token for ``client_id``: whether the client is active, its
    row held until the transaction ends so that no withdrawal (:func:`withdraw`) commits in between.

    PostgreSQL: ``FOR SHARE`` — creations do not queue on each other, a withdrawal's UPDATE waits for them, and
    one that waits for a withdrawal re-reads the row after it (READ COMMITTED) and finds it denied or gone.
    SQLite: a no-op UPDATE, which takes the database's one write lock now, not at the transaction's first
    later write (pysqlite begins a transaction only at a write, so a SELECT here would not be part of it).
    """
    live = and_(clients.c.client_id == client_id, clients.c.status == "active")
    if conn.dialect.name == "postgresql":
        return (await conn.execute(select(clients.c.client_id).where(live).with_for_update(read=True))).first() \
            is not None
    return (await conn.execute(update(clients).where(live).values(status=clients.c.status))).rowcount == 1


async def hold_active_client(conn: AsyncConnection, client_id: str) -> Client | None:
    """:func:`hold_if_active`, returning the row it holds (None: not active) so that the caller can compare it with
    the copy the request was authenticated against (:func:`same_credentials`); one statement, as there."""
    statement = _HOLD_ACTIVE_POSTGRESQL if conn.dialect.name == "postgresql" else _HOLD_ACTIVE_SQLITE
    row = (await conn.execute(statement, {"held_client_id": client_id})).first()
    return _client(row) if row is not None else None


_ACTIVE = and_(clients.c.client_id == bindparam("held_client_id"), clients.c.status == "active")
# Built once: SQLAlchemy reuses their cache keys and compiled forms (every grant of the token endpoint runs one).
_HOLD_ACTIVE_POSTGRESQL = select(clients).where(_ACTIVE).with_for_update(read=True)
_HOLD_ACTIVE_SQLITE = update(clients).where(_ACTIVE).values(status=clients.c.status).returning(*clients.c)


def same_credentials(stored: Client, used: Client) -> bool:
    """Whether everything authentication and the grant read from ``used`` is still so in ``stored``."""
    return all(getattr(stored, name) == getattr(used, name) for name in CREDENTIAL_FIELDS)


async def withdraw(conn: AsyncConnection, client_id: str, status: str) -> bool:
    """Deny (``denied``) or remove (``removed``) a client inside the caller's transaction, which then revokes its
    grants; False when no such client is stored.

    The row is written first, so the transaction waits for every creation holding it (:func:`hold_if_active`)
    and its later reads see their grants. A removed client's row is deleted, unless the configuration file
    declares it: then it stays, ``removed``, so that a restart does not bring it back.
    """
    if status not in WITHDRAWN:
        raise ValueError(f"not a withdrawal: {status!r}")
    changed = await conn.execute(update(clients).where(clients.c.client_id == client_id).values(status=status))
    if changed.rowcount != 1:
        return False
    if status == "removed":
        await conn.execute(delete(clients).where(and_(clients.c.client_id == client_id, clients.c.source != "config")))
    return True


def _row(client: Client) -> dict[str, Any]:
    values = dataclasses.asdict(client)
    values["redirect_uris"] = list(client.redirect_uris)
    values["grant_types"] = list(client.grant_types)
    return values


def _client(row: Any) -> Client:
    m = row._mapping
    return Client(
        client_id=m["client_id"],
        client_name=m["client_name"],
        redirect_uris=tuple(m["redirect_uris"]),
        grant_types=tuple(m["grant_types"]),
        token_endpoint_auth_method=m["token_endpoint_auth_method"],
        application_type=m["application_type"],
        source=m["source"],
        created_at=m["created_at"],
        client_secret_hash=m["client_secret_hash"],
        status=m["status"],
        jwks=m["jwks"],
        jwks_uri=m["jwks_uri"],
        registration_access_token_hash=m["registration_access_token_hash"],
        client_metadata=m["client_metadata"] or {},
    )
