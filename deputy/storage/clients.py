"""Registered OAuth clients (RFC 7591 §2 metadata subset); secrets stored as argon2id hashes."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from deputy.secrets import now
from deputy.storage.tables import clients

_hasher = PasswordHasher()


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

    @property
    def is_public(self) -> bool:
        return self.token_endpoint_auth_method == "none"

    def verify_secret(self, secret: str) -> bool:
        if self.client_secret_hash is None:
            return False
        try:
            return _hasher.verify(self.client_secret_hash, secret)
        except (VerificationError, InvalidHashError):
            return False


def hash_client_secret(secret: str) -> str:
    return _hasher.hash(secret)


class ClientRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def get(self, client_id: str) -> Client | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(clients).where(clients.c.client_id == client_id))).first()
        return _client(row) if row is not None else None

    async def list(self) -> list[Client]:
        async with self.engine.connect() as conn:
            rows = (await conn.execute(select(clients).order_by(clients.c.created_at))).all()
        return [_client(r) for r in rows]

    async def put(
        self,
        *,
        client_id: str,
        client_name: str,
        redirect_uris: Sequence[str],
        token_endpoint_auth_method: str,
        source: str,
        application_type: str = "native",
        grant_types: Sequence[str] = ("authorization_code", "refresh_token"),
        client_secret: str | None = None,
    ) -> Client:
        """Create the client, or replace it when it exists (configuration is re-applied at start)."""
        client = Client(
            client_id=client_id,
            client_name=client_name,
            redirect_uris=tuple(redirect_uris),
            grant_types=tuple(grant_types),
            token_endpoint_auth_method=token_endpoint_auth_method,
            application_type=application_type,
            source=source,
            created_at=now(),
            client_secret_hash=hash_client_secret(client_secret) if client_secret else None,
        )
        values = dataclasses.asdict(client)
        values["redirect_uris"] = list(client.redirect_uris)
        values["grant_types"] = list(client.grant_types)
        async with self.engine.begin() as conn:
            await conn.execute(delete(clients).where(clients.c.client_id == client_id))
            await conn.execute(clients.insert().values(**values))
        return client

    async def remove(self, client_id: str) -> bool:
        async with self.engine.begin() as conn:
            result = await conn.execute(delete(clients).where(clients.c.client_id == client_id))
        return result.rowcount == 1


def _client(row: object) -> Client:
    m = row._mapping  # type: ignore[attr-defined]
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
    )
