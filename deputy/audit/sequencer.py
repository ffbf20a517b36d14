"""The audit log's sequencer: one lock per database orders every append and checkpoint, and is never waited on
without a bound.

One log per database, shared by every replica (:mod:`deputy.audit.log`). A transaction that appends or signs a
checkpoint first takes the sequencer lock — ``pg_advisory_xact_lock(SEQUENCER_LOCK)`` on PostgreSQL, ``BEGIN
IMMEDIATE`` (the database's one write lock) on SQLite — and holds it until it ends, so two processes interleave
into one contiguous log (RFC 9162 §2.1: the head is always the root of all its leaves).

The bound. A holder that never ends its transaction — a replica stopped by SIGSTOP or a frozen VM in the middle
of an append, a session left open by hand — would otherwise stall every replica: each append waits for the lock,
every call waits for its record. So every sequencer transaction runs under ``[audit] append_timeout_ms``:

- on PostgreSQL, set transaction-locally before the lock is asked for: ``lock_timeout`` (waiting for the lock),
  ``statement_timeout`` (each statement of the append) and ``idle_in_transaction_session_timeout``. The last one
  is what frees the lock of a replica that is itself stopped mid-append: from the server's view its session is
  idle in an open transaction, and PostgreSQL ends that session once the timeout passes, which rolls the
  transaction back and releases the lock; the stopped replica's append then fails when it resumes;
- on SQLite, the busy timeout of the writer's connection (:mod:`deputy.audit.sqlite_writer`).

An append that cannot get the lock or finish within the bound fails, and the gateway refuses its call (fail
closed, 503); nothing of the transaction is stored. :meth:`Sequencer.probe` takes the lock the same way and
reads the head, then rolls back: readiness (``/readyz``) says whether an append would go through now, and says so
again by itself once the lock is free.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import insert, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from deputy.audit.log_plan import BatchPlan
from deputy.audit.sqlite_writer import SqliteBatchWriter, sqlite_path
from deputy.storage.tables import audit_head, audit_leaves, audit_nodes

SEQUENCER_LOCK = 0x6465707574790002  # 'deputy' + 2 (migrations use + 1)
HEAD_ID = 1
# Transaction-local (set_config(..., true)): they end with the transaction and never reach the pooled session.
TIMEOUTS = ("lock_timeout", "statement_timeout", "idle_in_transaction_session_timeout")
SET_TIMEOUTS = text("SELECT " + ", ".join(f"set_config('{name}', :ms, true)" for name in TIMEOUTS))

Head = tuple[int, bytes]  # (size, compact range bytes) of audit_head


class Sequencer:
    """Takes the sequencer lock within ``timeout_ms`` and runs the append transaction under it."""

    def __init__(self, engine: AsyncEngine, timeout_ms: int) -> None:
        self.engine = engine
        self.timeout_ms = timeout_ms
        self.is_sqlite = engine.dialect.name == "sqlite"
        path = sqlite_path(engine.url) if self.is_sqlite else None
        self._sqlite_writer = SqliteBatchWriter(path, timeout_ms) if path is not None else None

    async def lock(self, conn: AsyncConnection) -> None:
        """Take the sequencer lock as the transaction's first statement; held until it ends."""
        if self.is_sqlite:
            # The pysqlite driver begins transactions lazily, deferred; BEGIN IMMEDIATE takes the write lock now,
            # before the head is read, so no other writer can commit between our read and our write. It waits
            # for the engine's busy timeout (deputy.storage.db); appends go through the writer, bounded by ours.
            await conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            await conn.execute(SET_TIMEOUTS, {"ms": str(self.timeout_ms)})
            await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SEQUENCER_LOCK})

    async def head(self, conn: AsyncConnection) -> Head | None:
        row = (
            await conn.execute(select(audit_head.c.size, audit_head.c.compact).where(audit_head.c.id == HEAD_ID))
        ).first()
        return (int(row.size), bytes(row.compact)) if row is not None else None

    async def commit(self, plan: Callable[[Head | None], BatchPlan], created_at: int) -> BatchPlan:
        """One append transaction: lock, read the head, write what ``plan(head)`` says, commit; all or nothing."""
        if self._sqlite_writer is not None:
            result: BatchPlan = await self._sqlite_writer.commit(plan, created_at)
            return result
        async with self.engine.begin() as conn:
            await self.lock(conn)
            batch = plan(await self.head(conn))
            await conn.execute(insert(audit_leaves), [{"idx": idx, "record": entry, "created_at": created_at}
                                                      for idx, entry in batch.leaves])
            if batch.nodes:
                await conn.execute(insert(audit_nodes), [{"level": level, "idx": idx, "hash": h}
                                                         for level, idx, h in batch.nodes])
            head = {"size": batch.size, "compact": batch.compact}
            if batch.is_new:  # the lock makes this first insert race-free
                await conn.execute(insert(audit_head).values(id=HEAD_ID, **head))
            else:
                await conn.execute(update(audit_head).where(audit_head.c.id == HEAD_ID).values(**head))
        return batch

    async def probe(self) -> None:
        """Take the lock and read the head as an append would, within the same bound, then roll back; raises
        what the append would (a database error, a lock or statement timeout)."""
        if self._sqlite_writer is not None:
            await self._sqlite_writer.probe()
            return
        async with self.engine.connect() as conn:
            transaction = await conn.begin()
            try:
                await self.lock(conn)
                await self.head(conn)
            finally:
                await transaction.rollback()

    async def close(self) -> None:
        """Close the SQLite writer's connection; a later append opens a new one (a restarted log writes again)."""
        if self._sqlite_writer is not None:
            await self._sqlite_writer.close()
            self._sqlite_writer = SqliteBatchWriter(self._sqlite_writer.path, self.timeout_ms)
