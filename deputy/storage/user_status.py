"""Disabling a user, and creating grants for her, made to exclude each other through her row.

``deputy users disable`` must refuse her next sign-in and end every grant she holds (issue 14, item 3). It runs
one transaction (:meth:`deputy.storage.grants.GrantRepository.disable_user`) that first marks her row
(:func:`mark_disabled`), ends her login sessions, then revokes her live grants; every transaction that creates a
grant from her sign-in reads her row, held, first (:func:`hold_if_enabled`). Either the creation commits first
and the disabling, which waited for its hold, revokes what it made; or the creation sees her disabled and makes
nothing. The same pattern as a client's withdrawal (:mod:`deputy.storage.clients`).
"""

from __future__ import annotations

from sqlalchemy import and_, delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from deputy.storage.tables import login_sessions, users


async def hold_if_enabled(conn: AsyncConnection, user_id: str) -> bool:
    """Inside a transaction that creates a grant for ``user_id``: False when she is disabled; her row (if she has
    one) held until the transaction ends so that no disabling commits in between.

    PostgreSQL: ``FOR SHARE`` (a disabling's UPDATE waits for it; a creation that waited re-reads the row).
    SQLite: a no-op UPDATE takes the one write lock now. A user id with no row (a test's, or a grant whose
    subject is not a Deputy user) has nothing to hold and nothing that disables it."""
    row = users.c.user_id == user_id
    if conn.dialect.name != "postgresql":
        await conn.execute(update(users).where(row).values(disabled_at=users.c.disabled_at))
        query = select(users.c.disabled_at).where(row)
    else:
        query = select(users.c.disabled_at).where(row).with_for_update(read=True)
    found = (await conn.execute(query)).first()
    return found is None or found.disabled_at is None


async def mark_disabled(conn: AsyncConnection, username: str, at: int) -> str | None:
    """Mark ``username`` disabled (kept as it was if she already is) and end her login sessions, inside the
    caller's transaction, which then revokes her grants; her user id, None for an unknown name.

    Her row is written first, so the transaction waits for every creation holding it (:func:`hold_if_enabled`)
    and its later reads see their grants."""
    await conn.execute(update(users).where(and_(users.c.username == username, users.c.disabled_at.is_(None)))
                       .values(disabled_at=at))
    user_id = (await conn.execute(select(users.c.user_id).where(users.c.username == username))).scalar()
    if user_id is None:
        return None
    # A browser already signed in as her must not go on to a new consent or code.
    await conn.execute(delete(login_sessions).where(login_sessions.c.user_id == user_id))
    return str(user_id)
