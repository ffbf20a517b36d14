"""Login sessions and pending authorization requests.

Both live in the database so any replica can continue a flow another started.
A pending request is what ``/authorize`` validated; login and consent refer to
it by an opaque id and never re-read parameters from the browser.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from deputy.clock import now
from deputy.handles import handle_hash, new_handle
from deputy.storage.tables import authorization_requests, login_sessions


@dataclass(frozen=True, slots=True)
class LoginSession:
    user_id: str
    auth_time: int


class SessionRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def start(self, user_id: str, ttl: int) -> str:
        session_id = new_handle()
        t = now()
        async with self.engine.begin() as conn:
            await conn.execute(login_sessions.insert().values(
                session_hash=handle_hash(session_id), user_id=user_id, auth_time=t, expires_at=t + ttl))
        return session_id

    async def find(self, session_id: str) -> LoginSession | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(login_sessions).where(and_(
                login_sessions.c.session_hash == handle_hash(session_id),
                login_sessions.c.expires_at >= now())))).first()
        return LoginSession(row.user_id, row.auth_time) if row is not None else None

    async def end(self, session_id: str) -> None:
        """Forget a session (at a new sign-in in the same browser): its id stops working at once."""
        async with self.engine.begin() as conn:
            await conn.execute(delete(login_sessions).where(login_sessions.c.session_hash == handle_hash(session_id)))

    async def save_request(self, client_id: str, params: dict[str, Any], ttl: int) -> str:
        request_id = new_handle(24)
        async with self.engine.begin() as conn:
            await conn.execute(delete(authorization_requests).where(authorization_requests.c.expires_at < now()))
            await conn.execute(authorization_requests.insert().values(
                request_id=request_id, client_id=client_id, params=params, expires_at=now() + ttl))
        return request_id

    async def load_request(self, request_id: str) -> dict[str, Any] | None:
        async with self.engine.connect() as conn:
            row = (await conn.execute(select(authorization_requests).where(and_(
                authorization_requests.c.request_id == request_id,
                authorization_requests.c.expires_at >= now())))).first()
        return dict(row.params) if row is not None else None

    async def mark_signed_in(self, request_id: str, session_id: str) -> None:
        """Note that the person signed in for this pending request, with session ``session_id``: a ``prompt=login``
        or ``max_age`` it carries is then satisfied by that session (and only by it)."""
        async with self.engine.begin() as conn:
            row = (await conn.execute(select(authorization_requests.c.params).where(
                authorization_requests.c.request_id == request_id))).first()
            if row is not None:
                await conn.execute(update(authorization_requests).where(
                    authorization_requests.c.request_id == request_id).values(
                    params={**dict(row.params), "signed_in_session": handle_hash(session_id)}))

    async def consume_request(self, request_id: str) -> bool:
        """Finish a pending request; only the first caller gets True (one code per request)."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                delete(authorization_requests).where(authorization_requests.c.request_id == request_id))
        return result.rowcount == 1
