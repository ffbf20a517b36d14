"""Remembered consent per user, client and server, with the scopes granted."""

from __future__ import annotations

from sqlalchemy import and_, delete, select
from sqlalchemy.ext.asyncio import AsyncEngine

from deputy.secrets import now
from deputy.storage.tables import consents


class ConsentRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

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
