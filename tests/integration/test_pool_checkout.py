"""Issue 16: pooled PostgreSQL connections are checked as they leave the pool, not pinged on every checkout.

``pool_pre_ping`` cost three round trips before every transaction. Now (:mod:`deputy.storage.db`): a connection
the server closed is replaced at checkout, with no failed statement; one idle for longer than
``IDLE_BEFORE_PING`` is pinged first; one just used is not pinged at all. SQLite's write transactions of one
process queue on one lock (:func:`deputy.storage.db.one_writer`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.dialects.postgresql.asyncpg import AsyncAdapt_asyncpg_connection

import deputy.storage.db as db
from deputy.storage.db import Database, one_writer
from tests.support.databases import PG_ADMIN


@pytest.fixture
async def postgres(postgres_url: str) -> AsyncIterator[Database]:
    database = Database(postgres_url)
    yield database
    await database.dispose()


@pytest.fixture
def pings(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    seen: list[object] = []
    ping = AsyncAdapt_asyncpg_connection.ping

    def counted(self: Any) -> None:
        seen.append(self)
        ping(self)  # type: ignore[no-untyped-call]

    monkeypatch.setattr(AsyncAdapt_asyncpg_connection, "ping", counted)
    return seen


async def backend_pid(database: Database) -> int:
    async with database.engine.connect() as conn:
        return int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def test_a_connection_the_server_closed_is_replaced_without_a_failed_statement(postgres: Database) -> None:
    async with postgres.engine.connect() as conn:
        first = int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())
        driver: Any = (await conn.get_raw_connection()).driver_connection
    admin = await asyncpg.connect(PG_ADMIN, timeout=10)
    try:
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", first)
    finally:
        await admin.close()
    for _ in range(500):  # until the event loop has read the server's end of the pooled connection
        if driver.is_closed():
            break
        await asyncio.sleep(0.01)
    assert driver.is_closed()
    second = await backend_pid(postgres)  # no error: replaced at checkout
    assert second != first


async def test_a_connection_just_used_is_not_pinged(postgres: Database, pings: list[object]) -> None:
    await backend_pid(postgres)
    for _ in range(5):
        await backend_pid(postgres)
    assert pings == []


async def test_a_connection_idle_for_long_is_pinged(postgres: Database, pings: list[object],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    await backend_pid(postgres)
    monkeypatch.setattr(db, "IDLE_BEFORE_PING", -1.0)  # every pooled connection counts as idle for long
    await backend_pid(postgres)
    assert len(pings) == 1


async def test_sqlite_writers_of_one_process_share_one_lock(tmp_path: Any) -> None:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'deputy.db'}")
    try:
        assert one_writer(database.engine) is one_writer(database.engine)
        assert isinstance(one_writer(database.engine), asyncio.Lock)
    finally:
        await database.dispose()
