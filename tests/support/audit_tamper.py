"""What anyone who can write Deputy's database can do to its audit log without any key, for the tamper tests.

Each helper changes rows directly and then makes the log self-consistent again, as an attacker would: every
perfect-subtree node (``audit_nodes``) and the head (``audit_head``) recomputed from the leaves that remain
(RFC 9162 §2.1.1, with ``deputy.audit.merkle.CompactRange``), indexes made contiguous again, and the signed
checkpoints (and witness cosignatures) that would give the change away deleted.
"""

from __future__ import annotations

from sqlalchemy import delete, insert, select

from deputy.audit.merkle import CompactRange, leaf_hash
from deputy.storage.db import Database
from deputy.storage.tables import audit_checkpoints, audit_cosignatures, audit_head, audit_leaves, audit_nodes


async def rebuild(db: Database, entries: list[bytes]) -> None:
    """Replace the whole log with ``entries`` (indexes 0..n-1), its nodes and head recomputed."""
    compact = CompactRange()
    nodes: list[tuple[int, int, bytes]] = []
    for entry in entries:
        nodes.extend(compact.append(leaf_hash(entry)))
    async with db.engine.begin() as conn:
        for table in (audit_leaves, audit_nodes, audit_head):
            await conn.execute(delete(table))
        if entries:
            await conn.execute(
                insert(audit_leaves), [{"idx": i, "record": e, "created_at": 0} for i, e in enumerate(entries)]
            )
            await conn.execute(insert(audit_head).values(id=1, size=compact.size, compact=compact.to_bytes()))
        if nodes:
            await conn.execute(insert(audit_nodes), [{"level": lv, "idx": i, "hash": h} for lv, i, h in nodes])


async def entries(db: Database) -> list[bytes]:
    async with db.engine.connect() as conn:
        rows = await conn.execute(select(audit_leaves.c.record).order_by(audit_leaves.c.idx))
        return [bytes(r.record) for r in rows]


async def drop_checkpoints_above(db: Database, size: int) -> None:
    """Delete the checkpoints (and their cosignatures) of sizes above ``size``."""
    async with db.engine.begin() as conn:
        await conn.execute(delete(audit_checkpoints).where(audit_checkpoints.c.size > size))
        await conn.execute(delete(audit_cosignatures).where(audit_cosignatures.c.size > size))


async def edit(db: Database, index: int, old: bytes, new: bytes) -> None:
    """Change record ``index`` and recompute the tree; drop the checkpoints that cover it."""
    log = await entries(db)
    assert old in log[index]
    log[index] = log[index].replace(old, new)
    await rebuild(db, log)
    await drop_checkpoints_above(db, index)


async def remove(db: Database, index: int) -> None:
    """Delete record ``index``, renumber the later ones down, recompute; drop the checkpoints that cover it."""
    log = await entries(db)
    del log[index]
    await rebuild(db, log)
    await drop_checkpoints_above(db, index)


async def truncate(db: Database, size: int) -> None:
    """Cut the log back to ``size`` records (an earlier checkpoint's size) and drop the later checkpoints."""
    await rebuild(db, (await entries(db))[:size])
    await drop_checkpoints_above(db, size)


async def wipe(db: Database) -> None:
    """Delete every audit row."""
    await rebuild(db, [])
    await drop_checkpoints_above(db, -1)
