"""Remembered consent per user, client and server, with the scopes granted.

Revoking a consent also revokes every grant (refresh-token family and, through the
``revocations`` table the gateway polls, its access tokens) the user gave that client
for that server, in the same transaction: once the command returns, nothing the
consent produced can be refreshed, and the gateway refuses its access tokens within
its revocation staleness bound.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from deputy.clock import now
from deputy.storage.grants import GrantRepository, Revoked
from deputy.storage.tables import consents

# Revocations made here must outlive any access token; this is the longest lifetime configuration allows.
_LONGEST_ACCESS_TOKEN_TTL = 3600


@dataclass(frozen=True, slots=True)
class Consent:
    user_id: str
    client_id: str
    resource: str
    scope: str
    granted_at: int


@dataclass(frozen=True, slots=True)
class ConsentRevocation:
    consents: int
    grants: int


class ConsentRepository:
    def __init__(self, engine: AsyncEngine, grants: GrantRepository | None = None) -> None:
        self.engine = engine
        self.grants = grants or GrantRepository(engine, _LONGEST_ACCESS_TOKEN_TTL)

    async def covers(self, user_id: str, client_id: str, resource: str, scopes: set[str]) -> bool:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(consents.c.scope).where(and_(
                consents.c.user_id == user_id, consents.c.client_id == client_id,
                consents.c.resource == resource)))).first()
        return row is not None and scopes <= set(row.scope.split())

    async def grant(self, user_id: str, client_id: str, resource: str, scopes: set[str]) -> None:
        """Remember consent; scopes already granted to this client for this server are kept."""
        key = and_(consents.c.user_id == user_id, consents.c.client_id == client_id,
                   consents.c.resource == resource)
        async with self.engine.begin() as conn:
            row = (await conn.execute(select(consents.c.scope).where(key))).first()
            merged = scopes | (set(row.scope.split()) if row is not None else set())
            await conn.execute(delete(consents).where(key))
            await conn.execute(consents.insert().values(
                user_id=user_id, client_id=client_id, resource=resource,
                scope=" ".join(sorted(merged)), granted_at=now()))

    async def list(self, user_id: str | None = None) -> list[Consent]:
        query = select(consents).order_by(consents.c.user_id, consents.c.client_id, consents.c.resource)
        if user_id is not None:
            query = query.where(consents.c.user_id == user_id)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query)).all()
        return [Consent(r.user_id, r.client_id, r.resource, r.scope, r.granted_at) for r in rows]

    async def revoke(self, user_id: str, client_id: str, resource: str | None = None) -> ConsentRevocation:
        """Forget the consent (for one server, or all) and revoke every grant it produced."""
        key = and_(consents.c.user_id == user_id, consents.c.client_id == client_id)
        if resource is not None:
            key = and_(key, consents.c.resource == resource)
        revoked_log: Revoked = []
        async with self.engine.begin() as conn:
            deleted = await conn.execute(delete(consents).where(key))
            revoked = await self.grants.revoke_families(conn, user_id=user_id, client_id=client_id,
                                                        resource=resource, reason="consent_revoked",
                                                        revoked_log=revoked_log)
        await self.grants.report(revoked_log)
        return ConsentRevocation(consents=deleted.rowcount, grants=revoked)
