"""Run the ``deputy`` CLI with its database engine's work counted; the counts go to OUT (JSON) every 0.1 s.

Usage: python bench/_count_deputy_statements.py OUT serve
Used by ``token_exchange.py --count``: SQLAlchemy engine and pool events count pool checkouts, transactions
(``begin``, ``commit``, ``rollback``), statements, and pre-pings (the dialect's ``do_ping``); the bench reads
the file before and after a number of sequential requests and divides. Counting costs a little per statement,
so the rates of a counted run are not quoted.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import event

import deputy.storage.db as db
from deputy.cli import app

counts: Counter[str] = Counter()


def count(name: str) -> Any:
    def listener(*_args: Any, **_kwargs: Any) -> None:
        counts[name] += 1
    return listener


def instrument(database: db.Database) -> None:
    sync_engine = database.engine.sync_engine
    for name in ("begin", "commit", "rollback"):
        event.listen(sync_engine, name, count(name))
    event.listen(sync_engine, "before_cursor_execute", count("statements"))
    event.listen(sync_engine.pool, "checkout", count("checkouts"))
    dialect = sync_engine.dialect
    do_ping = dialect.do_ping

    def counted_ping(dbapi_connection: Any) -> bool:
        counts["pings"] += 1
        return do_ping(dbapi_connection)

    dialect.do_ping = counted_ping  # type: ignore[method-assign]


def main() -> None:
    out = Path(sys.argv[1])
    original_init = db.Database.__init__

    def init(self: db.Database, url: str) -> None:
        original_init(self, url)
        instrument(self)

    db.Database.__init__ = init  # type: ignore[method-assign]

    def dump() -> None:
        while True:
            out.with_suffix(".tmp").write_text(json.dumps(dict(counts)))
            out.with_suffix(".tmp").replace(out)
            time.sleep(0.1)

    threading.Thread(target=dump, daemon=True).start()
    app(sys.argv[2:], standalone_mode=False)


if __name__ == "__main__":
    main()
