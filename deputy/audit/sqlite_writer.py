"""On SQLite, one batch of audit appends is one trip to one thread.

Through SQLAlchemy and aiosqlite every statement of the append transaction (``BEGIN IMMEDIATE``,
read the head, insert the leaves, insert the nodes, write the head, ``COMMIT``) is a hop to the
driver's thread and back, about a millisecond of CPU per batch on a small machine — most of what
auditing a call cost. The writer keeps its own ``sqlite3`` connection to the same database file
(WAL, the pragmas of :mod:`deputy.storage.db`) in its own thread and runs the whole transaction
there in one go; the transaction is the same one (:func:`deputy.audit.log_plan.plan_batch` decides
what it writes), and ``BEGIN IMMEDIATE`` still makes it the only writer between reading the head
and committing, across connections and processes.

``BEGIN IMMEDIATE`` waits for the write lock at most the connection's busy timeout, which is the
log's ``[audit] append_timeout_ms`` (:mod:`deputy.audit.sequencer`): another process holding the
write lock makes appends fail after that, never hang.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any


class SqliteBatchWriter:
    def __init__(self, path: str, busy_timeout_ms: int) -> None:
        self.path = path
        self.busy_timeout_ms = busy_timeout_ms
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="audit-sqlite")
        self._connection: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            connection = sqlite3.connect(self.path, timeout=self.busy_timeout_ms / 1000, isolation_level=None,
                                         check_same_thread=False)
            for pragma in ("journal_mode=WAL", "synchronous=NORMAL", f"busy_timeout={self.busy_timeout_ms}"):
                connection.execute(f"PRAGMA {pragma}")
            self._connection = connection
        return self._connection

    async def commit(self, plan: Callable[[tuple[int, bytes] | None], Any], created_at: int) -> Any:
        """Run the append transaction in the writer's thread: ``plan(head)`` (head = (size, compact bytes) or
        None) says what to write; returns what ``plan`` returned."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, self._transaction, plan, created_at)

    def _transaction(self, plan: Callable[[tuple[int, bytes] | None], Any], created_at: int) -> Any:
        connection = self._connect()
        connection.execute("BEGIN IMMEDIATE")
        try:
            row = connection.execute("SELECT size, compact FROM audit_head WHERE id = 1").fetchone()
            batch = plan((int(row[0]), bytes(row[1])) if row is not None else None)
            connection.executemany("INSERT INTO audit_leaves (idx, record, created_at) VALUES (?, ?, ?)",
                                   [(idx, entry, created_at) for idx, entry in batch.leaves])
            if batch.nodes:
                connection.executemany("INSERT INTO audit_nodes (level, idx, hash) VALUES (?, ?, ?)", batch.nodes)
            if batch.is_new:
                connection.execute("INSERT INTO audit_head (id, size, compact) VALUES (1, ?, ?)",
                                   (batch.size, batch.compact))
            else:
                connection.execute("UPDATE audit_head SET size = ?, compact = ? WHERE id = 1",
                                   (batch.size, batch.compact))
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        return batch

    async def probe(self) -> None:
        """Take the write lock and read the head as an append would, then roll back (readiness)."""
        await asyncio.get_running_loop().run_in_executor(self._executor, self._probe)

    def _probe(self) -> None:
        connection = self._connect()
        connection.execute("BEGIN IMMEDIATE")
        try:
            connection.execute("SELECT size FROM audit_head WHERE id = 1").fetchone()
        finally:
            connection.execute("ROLLBACK")

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await asyncio.get_running_loop().run_in_executor(self._executor, connection.close)
        self._executor.shutdown(wait=False)


def sqlite_path(url: Any) -> str | None:
    """The database file of a ``sqlite+aiosqlite:///PATH`` engine URL; None for an in-memory database."""
    database: str | None = getattr(url, "database", None)
    return database if database and database != ":memory:" else None

