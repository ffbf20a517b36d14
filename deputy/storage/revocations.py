"""Reading the ``revocations`` table: how a revocation reaches every replica, whatever the commit order.

Each replica keeps a view of revoked grants (deputy.gateway.revocations) and
reads the rows committed since its last read. A revocation id is drawn when the
row is inserted, not when its transaction commits, so on PostgreSQL a lower id
can commit after a higher one has been read (two revocations racing, or one
whose transaction does more work): reading "ids above the last one seen" loses
that row for good, and the grant's tokens keep working on every replica.

So the cursor is a *horizon* instead of an id:

- PostgreSQL: each row carries the id of the transaction that wrote it
  (``writer_xid``, set by the server; migration 0010). One REPEATABLE READ
  snapshot gives both the rows and its ``xmin``, the oldest transaction still
  running: every transaction below it has ended and, if it committed, is
  visible in that snapshot. The next read takes every row written by a
  transaction at or above that ``xmin`` — whatever was running, or had not
  begun, at this read — in whatever order those commit. Rows can be read twice
  (the view is a set), never missed. A long transaction anywhere holds the
  horizon back and makes reads re-read more rows, nothing worse.
- SQLite has one writer at a time: an id is drawn while the writer holds the
  database's write lock and commits before anyone else draws one, so ids are in
  commit order and "ids above the last one seen" is exact there. (Rows are never
  deleted: SQLite would hand the id of a deleted newest row out again.)

Gap tracking or a trailing window of ids would be correct only as long as no
transaction stays open longer than the window; the horizon holds under any
commit order, which is what the view needs.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Row, and_, select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from deputy.clock import now
from deputy.storage.tables import revocations


@dataclass(frozen=True, slots=True)
class Revocation:
    revocation_id: int
    grant_id: str
    expires_at: int


async def revocations_after(engine: AsyncEngine, horizon: int | None) -> tuple[list[Revocation], int]:
    """Every unexpired revocation committed since the read that returned ``horizon`` (``None``: all), and the
    horizon to pass next time. A row may come back more than once; none is ever missed."""
    query = select(revocations).where(revocations.c.expires_at >= now())
    async with engine.connect() as conn:
        if engine.dialect.name != "postgresql":
            if horizon is not None:
                query = query.where(revocations.c.revocation_id > horizon)
            rows = (await conn.execute(query)).all()
            return [_revocation(r) for r in rows], max([horizon or 0, *(r.revocation_id for r in rows)])
        await conn.execution_options(isolation_level="REPEATABLE READ")
        # The first statement fixes the transaction's snapshot: the rows below are read in that same snapshot.
        next_horizon = (await conn.execute(
            text("SELECT (pg_snapshot_xmin(pg_current_snapshot())::text)::bigint"))).scalar_one()
        if horizon is not None:
            # Rows from before migration 0010 have no writer_xid: the first (full) read took them.
            query = query.where(revocations.c.writer_xid >= horizon)
        rows = (await conn.execute(query)).all()
    return [_revocation(r) for r in rows], int(next_horizon)


async def revocations_since(engine: AsyncEngine, revocation_id: int) -> list[Revocation]:
    """Unexpired revocations with an id above ``revocation_id``, in id order: a listing, not a feed to follow
    (ids are not in commit order on PostgreSQL)."""
    async with engine.connect() as conn:
        rows = (await conn.execute(
            select(revocations).where(and_(revocations.c.revocation_id > revocation_id,
                                           revocations.c.expires_at >= now()))
            .order_by(revocations.c.revocation_id))).all()
    return [_revocation(r) for r in rows]


def _revocation(row: Row[tuple[object, ...]]) -> Revocation:
    return Revocation(row.revocation_id, row.grant_id, row.expires_at)
