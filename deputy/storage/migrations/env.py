"""Alembic environment: runs on the connection Deputy hands it (async engines via run_sync)."""

from __future__ import annotations

from alembic import context

from deputy.storage.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("Deputy runs its migrations itself: use `deputy migrate`, not the alembic command")
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
