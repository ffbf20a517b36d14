"""Open the database for a verifier without changing anything: no file created, no migration, no row written.

A verifier that writes would be a second way to change what it checks (a key created, a schema migrated, a row
touched), and an auditor must be able to run it with no more than read access.

- SQLite: the file is opened with ``mode=ro`` (https://www.sqlite.org/uri.html); a missing file is an error, not a
  new empty database. When no ``-wal`` file exists (no connection has the database open in WAL mode, e.g. a
  stopped Deputy), ``immutable=1`` is added as well, because a read-only WAL reader would otherwise leave new
  ``-wal``/``-shm`` files behind.
- PostgreSQL: every transaction is ``READ ONLY`` (``default_transaction_read_only``), so the server refuses a write.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine


class DatabaseMissing(RuntimeError):
    """The configured SQLite database file does not exist."""


def open_readonly(url: str) -> AsyncEngine:
    """A read-only engine on ``url``; raises ``DatabaseMissing`` for an SQLite file that does not exist."""
    if url.startswith("sqlite"):
        scheme, _, path = url.partition(":///")
        if not path or path == ":memory:" or path.startswith("file:"):
            raise DatabaseMissing(f"cannot open {url} read only (give an SQLite file path)")
        file = Path(path)
        if not file.is_file():
            raise DatabaseMissing(f"there is no database at {file}")
        immutable = "" if file.with_name(file.name + "-wal").exists() else "&immutable=1"
        target = f"{scheme}:///file:{quote(str(file.resolve()))}?mode=ro{immutable}&uri=true"
        return create_async_engine(target, connect_args={"timeout": 15})
    return create_async_engine(
        url, pool_size=2, connect_args={"server_settings": {"default_transaction_read_only": "on"}}
    )
