"""Engine creation and migrations.

SQLite runs in WAL mode with a busy timeout so readers never block the writer;
PostgreSQL goes through asyncpg. Migrations are alembic's, applied by Deputy at
start (``Database.migrate``) on the same engine the application uses. A database already at
:data:`HEAD_REVISION` is left alone without loading alembic (about 10 MB of a serving process's memory, and
every worker of ``serve --workers N`` after the parent has migrated); ``tests/unit/test_migration_head.py``
holds that constant to alembic's own head, so a new migration cannot be skipped.

A pooled PostgreSQL connection is checked as it is taken from the pool (:func:`_check_on_checkout`), not pinged
every time (SQLAlchemy's ``pool_pre_ping`` is three round trips — ``BEGIN``, ``;``, ``ROLLBACK`` — before every
transaction, more than the work of most requests): one the server closed (a restart, ``pg_terminate_backend``,
an idle timeout) is known to asyncpg as closed as soon as the event loop has read its end, and is replaced; one
unused for :data:`IDLE_BEFORE_PING` seconds is pinged first (a peer that vanished without closing, e.g. a
failover); none is kept longer than :data:`RECYCLE_SECONDS`. A connection lost in the middle of a statement fails
that request (503, fail closed) and SQLAlchemy then replaces every connection opened before the loss.

SQLite has one writer. Write transactions of this process that many requests run at once (a grant, a client
assertion's ``jti``) take :func:`one_writer` first: they queue on an ``asyncio.Lock`` without holding a pooled
connection, instead of each holding one while sleeping in SQLite's busy handler for the database's write lock
(which then only other processes, and the audit log's writer thread, contend for). The pool keeps as many
connections as PostgreSQL's, so that a burst does not open and close aiosqlite connections (a thread each).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import time
import weakref
from contextlib import AbstractAsyncContextManager, nullcontext
from pathlib import Path
from typing import Any

from sqlalchemy import event, inspect, text
from sqlalchemy.engine import Connection, Dialect, ExceptionContext
from sqlalchemy.exc import DisconnectionError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

logging.getLogger("alembic").setLevel(logging.WARNING)
MIGRATION_LOCK = 0x6465707574790001  # 'deputy' + 1
MIGRATIONS = Path(__file__).parent / "migrations"
HEAD_REVISION = "0015"  # the newest revision in migrations/versions
IDLE_BEFORE_PING = 5.0  # seconds a pooled PostgreSQL connection may sit unused before a checkout pings it
RECYCLE_SECONDS = 1800  # no PostgreSQL connection is used longer than this


class StorageUnavailable(SQLAlchemyError):
    """The database could not be reached: the driver's socket failed (refused, unresolvable host, timed out,
    reset) with an ``OSError`` that SQLAlchemy does not wrap, because it is not a DB-API error. Raised in
    its place (:func:`_connect_or_unavailable`, :func:`_unreachable`), so an ``OSError`` reaching a caller
    is never the database's, and every database failure is a ``SQLAlchemyError``; callers refuse the
    request (fail closed)."""


class Database:
    """The async engine plus Deputy's migrations; repositories take ``Database.engine``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        self.sqlite_path: Path | None = None
        if self.is_sqlite:
            path = url.split("///", 1)[1] if "///" in url else ""
            if path and path != ":memory:":
                self.sqlite_path = Path(path)
                self.sqlite_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                # Created 0600 before SQLite opens it; its -wal and -shm files take the same mode.
                os.close(os.open(self.sqlite_path, os.O_RDWR | os.O_CREAT, 0o600))
            # hide_parameters: an error's text (logged) never carries the values of a statement, e.g. a record's.
            self.engine: AsyncEngine = create_async_engine(url, connect_args={"timeout": 15}, pool_size=10,
                                                           max_overflow=10, hide_parameters=True)
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        else:
            self.engine = create_async_engine(url, pool_size=10, max_overflow=10, pool_recycle=RECYCLE_SECONDS,
                                              hide_parameters=True)
            event.listen(self.engine.sync_engine.pool, "checkin", _idle_from_now)
            event.listen(self.engine.sync_engine.pool, "checkout", _check_on_checkout)
        event.listen(self.engine.sync_engine, "do_connect", _connect_or_unavailable)
        event.listen(self.engine.sync_engine, "handle_error", _unreachable)

    async def migrate(self) -> None:
        """Bring the schema to head; processes starting together migrate one at a time."""
        lock = None
        if self.sqlite_path is not None:
            lock = await asyncio.to_thread(_lock_file, self.sqlite_path.with_suffix(".migrate.lock"))
        try:
            async with self.engine.begin() as conn:
                if not self.is_sqlite:
                    await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
                await conn.run_sync(_upgrade)
        finally:
            if lock is not None:
                os.close(lock)  # closing the descriptor releases the lock

    async def check_writable(self) -> None:
        """Raise unless the database takes a write. The one row of ``alembic_version`` is rewritten in a
        transaction that is then rolled back, so nothing changes: a read-only database (a standby after a
        failover, ``default_transaction_read_only``, a read-only or locked SQLite file) fails this where a
        SELECT would pass."""
        async with self.engine.connect() as conn:
            transaction = await conn.begin()
            try:
                if not self.is_sqlite:
                    # A migration holding the row is not a reason to hang the probe.
                    await conn.execute(text("SET LOCAL lock_timeout = '2s'"))
                await conn.execute(text("UPDATE alembic_version SET version_num = version_num"))
            finally:
                await transaction.rollback()

    async def dispose(self) -> None:
        await self.engine.dispose()


_writers: weakref.WeakKeyDictionary[AsyncEngine, dict[asyncio.AbstractEventLoop, asyncio.Lock]] = \
    weakref.WeakKeyDictionary()


def one_writer(engine: AsyncEngine) -> AbstractAsyncContextManager[Any]:
    """Held around a write transaction on ``engine``: on SQLite, one such transaction of this process at a time
    (per event loop: a lock belongs to one); on PostgreSQL, nothing (row locks decide)."""
    if engine.dialect.name != "sqlite":
        return nullcontext()
    locks = _writers.setdefault(engine, {})
    loop = asyncio.get_running_loop()
    lock = locks.get(loop)
    if lock is None:
        for stale in [other for other in locks if other.is_closed()]:
            del locks[stale]
        lock = locks[loop] = asyncio.Lock()
    return lock


def _lock_file(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _connect_or_unavailable(dialect: Dialect, _record: Any, cargs: list[Any], cparams: dict[str, Any]) -> Any:
    """Open a driver connection as SQLAlchemy would; a socket that cannot be opened is ``StorageUnavailable``."""
    try:
        return dialect.connect(*cargs, **cparams)
    except OSError as exc:
        raise StorageUnavailable(f"the database cannot be reached: {type(exc).__name__}") from exc


def _unreachable(context: ExceptionContext) -> StorageUnavailable | None:
    """A statement's connection failed at the socket (no DB-API error to wrap): ``StorageUnavailable``."""
    if context.sqlalchemy_exception is None and isinstance(context.original_exception, OSError):
        return StorageUnavailable(f"the database cannot be reached: {type(context.original_exception).__name__}")
    return None


def _idle_from_now(_dbapi_connection: Any, record: Any) -> None:
    record.info["idle_since"] = time.monotonic()


def _check_on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
    """Replace a pooled connection the server has closed, or one idle for long that does not answer a ping
    (raising ``DisconnectionError`` makes the pool open a new one in its place)."""
    driver = getattr(dbapi_connection, "driver_connection", None)
    if driver is not None and driver.is_closed():
        raise DisconnectionError("the database closed this pooled connection")
    idle_since = record.info.get("idle_since")
    if idle_since is not None and time.monotonic() - idle_since > IDLE_BEFORE_PING:
        try:
            dbapi_connection.ping()
        except Exception as exc:  # whatever the failure, this connection is not to be used
            raise DisconnectionError(f"a pooled connection idle for long failed its ping: {type(exc).__name__}") \
                from exc


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=15000")
    cursor.close()


def _upgrade(connection: Connection) -> None:
    if at_head(connection):
        return
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def at_head(connection: Connection) -> bool:
    """Whether the schema is exactly at :data:`HEAD_REVISION` (one row, that revision)."""
    if not inspect(connection).has_table("alembic_version"):
        return False
    return list(connection.execute(text("SELECT version_num FROM alembic_version")).scalars()) == [HEAD_REVISION]
