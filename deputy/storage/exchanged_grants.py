"""Grants made by token exchange, and what revoking their sources does to them (RFC 8693 §1.1, §2.1, §4.1).

An exchanged token carries the authority of two tokens: the subject's (whom it is
for) and the actor's (who acts). Its grant records both — ``parent_grant_id`` the
subject token's grant, ``actor_grant_id`` the actor token's — and depends on each:
while either is revoked or unknown no such grant is written, and revoking either
revokes it, and, breadth first, everything exchanged from it (RFC 7009 §2.1 lets
revoking one token revoke the tokens derived from it). An actor whose own token is
revoked loses what it obtained with it, at any depth.

An exchange racing the revocation of one of its sources leaves no live grant, in
either order:

- PostgreSQL: the exchange reads its sources ``FOR SHARE NOWAIT`` in the statement
  that writes the new grant (a subquery of its ``INSERT … SELECT``). A revocation
  already holding a source (it updates the row) makes the exchange fail at once,
  never queue, so it never joins a deadlock with a revocation of several grants; a
  revocation that comes later waits for the exchange to commit, and its next
  statement (READ COMMITTED) finds the new grant among the dependants it revokes.
- SQLite has one writer: the grant is written by one ``INSERT … SELECT`` that checks
  the sources, so check and write happen under the write lock a revocation also needs.

The check in the ``INSERT`` runs on both, so neither backend relies on the other's argument.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping, Sequence

from sqlalchemy import BindParameter, ColumnElement, Insert, and_, bindparam, exists, func, or_, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from deputy.storage.tables import grants

LOCK_NOT_AVAILABLE = "55P03"  # PostgreSQL's SQLSTATE for a NOWAIT lock held by someone else

PARENT_REVOKED = "parent_revoked"
ACTOR_REVOKED = "actor_revoked"

# Grant ids bound in one statement: an actor token may have been exchanged many thousand times, and a statement
# takes at most 32767 parameters (asyncpg) or 32766 (SQLite); a revocation that cannot run would revoke nothing.
CHUNK = 1000


def chunks(ids: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(ids), CHUNK):
        yield ids[start:start + CHUNK]


async def insert_derived(conn: AsyncConnection, values: Mapping[str, object], *, parent_grant_id: str | None,
                         actor_grant_id: str | None) -> bool:
    """Insert the grant ``values`` describe, inside the caller's transaction, if every grant it comes from is
    live; whether it was inserted. A grant with neither source is simply inserted."""
    sources = sorted({g for g in (parent_grant_id, actor_grant_id) if g is not None})
    row = {**values, "parent_grant_id": parent_grant_id, "actor_grant_id": actor_grant_id}
    if not sources:
        await conn.execute(_INSERT, row)
        return True
    bound = {f"source_{i}": g for i, g in enumerate(sources)}
    values_bound = {f"value_{n}": v for n, v in row.items()}
    postgresql = conn.dialect.name == "postgresql"
    try:
        inserted = await conn.execute(_insert_if_live(tuple(row), len(sources), postgresql), {**values_bound, **bound})
    except DBAPIError as exc:
        if postgresql and getattr(exc.orig, "sqlstate", None) == LOCK_NOT_AVAILABLE:
            return False  # a source is being revoked right now
        raise
    return inserted.rowcount == 1


# The statements of an exchange, built once per shape: SQLAlchemy then reuses their cache keys and compiled forms
# instead of building and hashing a new expression for every request.

_INSERT = grants.insert()


@functools.cache
def _insert_if_live(names: tuple[str, ...], count: int, postgresql: bool) -> Insert:
    source = grants.alias("source")
    live: list[ColumnElement[bool]] = [
        exists().where(and_(source.c.grant_id == bindparam(f"source_{i}"), source.c.revoked_at.is_(None)))
            for i in range(count)]
    if postgresql:
        ids: list[BindParameter[str]] = [bindparam(f"source_{i}") for i in range(count)]
        held = (select(grants.c.grant_id).where(and_(grants.c.grant_id.in_(ids), grants.c.revoked_at.is_(None)))
                .order_by(grants.c.grant_id).with_for_update(read=True, nowait=True).subquery("held"))
        live.append(select(func.count()).select_from(held).scalar_subquery() == count)
    values = select(*(bindparam(f"value_{n}", type_=grants.c[n].type) for n in names)).where(and_(*live))
    return grants.insert().from_select(list(names), values)


async def revoke_derived(conn: AsyncConnection, grant_id: str, at: int) -> list[str]:
    """Revoke, inside the caller's transaction, every live grant exchanged from ``grant_id`` — as subject or as
    actor, at any depth — and return their ids (each gets a revocation row from the caller).

    Links only ever point at older grants, so they form no cycle; a set of the grants already reached still
    bounds the walk, whatever the rows say."""
    reached = {grant_id}
    revoked: list[str] = []
    frontier = [grant_id]
    while frontier:
        revoking = set(frontier)
        dependants: dict[str, str] = {}
        for part in chunks(frontier):
            for row in (await conn.execute(
                    select(grants.c.grant_id, grants.c.parent_grant_id).where(and_(
                        or_(grants.c.parent_grant_id.in_(part), grants.c.actor_grant_id.in_(part)),
                        grants.c.revoked_at.is_(None))))).all():
                if row.grant_id not in reached:
                    dependants[row.grant_id] = PARENT_REVOKED if row.parent_grant_id in revoking else ACTOR_REVOKED
        for reason in (PARENT_REVOKED, ACTOR_REVOKED):
            for ids in chunks([g for g, why in dependants.items() if why == reason]):
                await conn.execute(update(grants).where(and_(grants.c.grant_id.in_(ids), grants.c.revoked_at.is_(None)))
                                   .values(revoked_at=at, revoked_reason=reason))
        reached.update(dependants)
        revoked.extend(dependants)
        frontier = list(dependants)
    return revoked
