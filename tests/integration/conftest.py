"""A migrated database per test module and backend (SQLite, PostgreSQL), shared by the storage tests."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from sqlalchemy import delete

from deputy.storage.db import Database
from deputy.storage.grants import GrantRepository
from deputy.storage.tables import audit_checkpoints, audit_head, audit_leaves, audit_nodes
from tests.support.databases import database_url


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="module")
def url(backend: str, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    name = request.module.__name__.rsplit(".", 1)[-1]
    with database_url(backend, tmp_path_factory.mktemp(f"{name}-{backend}")) as value:
        yield value


@pytest.fixture(scope="module")
async def db(url: str) -> AsyncIterator[Database]:
    database = Database(url)
    await database.migrate()
    yield database
    await database.dispose()


@pytest.fixture
async def fresh(db: Database) -> AsyncIterator[Database]:
    """The module's database with an empty audit log: one log per database, so each test starts from zero."""
    async with db.engine.begin() as conn:
        for table in (audit_leaves, audit_nodes, audit_checkpoints, audit_head):
            await conn.execute(delete(table))
    yield db


@pytest.fixture(scope="module")
def postgres_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL database of the module's own, for tests of what only PostgreSQL's concurrency can show."""
    name = request.module.__name__.rsplit(".", 1)[-1]
    with database_url("postgresql", tmp_path_factory.mktemp(f"{name}-postgresql-only")) as value:
        yield value


@pytest.fixture
async def postgres_grants(postgres_url: str) -> AsyncIterator[GrantRepository]:
    database = Database(postgres_url)
    await database.migrate()
    yield GrantRepository(database.engine, access_token_ttl=600)
    await database.dispose()
