"""Engine creation and migrations.

SQLite runs in WAL mode with a busy timeout so readers never block the writer;
PostgreSQL goes through asyncpg. Migrations are alembic's, applied by Deputy at
start (``Database.migrate``) on the same engine the application uses.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

logging.getLogger("alembic").setLevel(logging.WARNING)
MIGRATION_LOCK = 0x6465707574790001  # 'deputy' + 1
MIGRATIONS = Path(__file__).parent / "migrations"


class StorageUnavailable(RuntimeError):
    """The database could not be reached; callers refuse the request (fail closed)."""


class Database:
    """The async engine plus Deputy's migrations; repositories take ``Database.engine``."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            path = url.split("///", 1)[1] if "///" in url else ""
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.engine: AsyncEngine = create_async_engine(url, connect_args={"timeout": 15})
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        else:
            self.engine = create_async_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True)

    async def migrate(self) -> None:
        async with self.engine.begin() as conn:
            if not self.is_sqlite:
                # Replicas starting together: one migrates, the others wait and then find nothing to do.
                await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            await conn.run_sync(_upgrade)

    async def dispose(self) -> None:
        await self.engine.dispose()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=15000")
    cursor.close()


def _upgrade(connection: Connection) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, "head")
