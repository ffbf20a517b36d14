"""A migrated database per test module and backend (SQLite, PostgreSQL), shared by the storage tests."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from deputy.storage.db import Database
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
