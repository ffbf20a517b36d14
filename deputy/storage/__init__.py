"""Persistent state: SQLAlchemy 2 async Core tables, migrations, repositories.

SQLite (WAL) is the embedded default; PostgreSQL is the shared store for any
number of replicas. Every single-use thing (codes, refresh tokens) is consumed
with one conditional UPDATE so two replicas can never both succeed.
"""

from deputy.storage.db import Database

__all__ = ["Database"]
