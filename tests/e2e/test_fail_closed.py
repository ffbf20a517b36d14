"""When the database goes away, Deputy refuses instead of waving calls through.

The gateway cannot check revocations without the database, so once its view is older
than `gateway.revocation_max_staleness` every call gets 503; the token endpoint answers
`temporarily_unavailable`. Nothing is forwarded, nothing crashes. Readiness needs a database
that takes writes, not only one that answers.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest

from tests.support.databases import PG_ADMIN, database_url
from tests.support.deputy_process import RunningDeputy, running_deputy
from tests.support.oauth_flow import mcp_post, tokens_for_alice


@pytest.fixture(scope="module")
def deputy_on_postgres(upstream_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDeputy]:
    directory: Path = tmp_path_factory.mktemp("fail-closed")
    with database_url("postgresql", directory) as url, running_deputy(
            directory, url, upstream_url, "\n[gateway]\nrevocation_max_staleness = 1.0\n") as running:
        yield running


@pytest.fixture(scope="module")
def deputy_on_sqlite(upstream_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDeputy]:
    directory: Path = tmp_path_factory.mktemp("fail-closed-sqlite")
    with database_url("sqlite", directory) as url, running_deputy(directory, url, upstream_url) as running:
        yield running


async def readiness(deputy: RunningDeputy) -> int:
    async with httpx.AsyncClient(timeout=60) as http:
        return (await http.get(f"{deputy.url}/readyz")).status_code


async def set_read_only(database_url: str, read_only: bool) -> None:
    """Make the database refuse writes to every new session (as a standby after a failover does) and end
    the sessions Deputy holds, so its pool reconnects into the new mode."""
    name = database_url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(PG_ADMIN)
    try:
        setting = "SET default_transaction_read_only = on" if read_only else "RESET default_transaction_read_only"
        await admin.execute(f'ALTER DATABASE "{name}" {setting}')
        await admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name)
    finally:
        await admin.close()


async def test_a_read_only_database_is_not_ready(deputy_on_postgres: RunningDeputy) -> None:
    """Issue 11 (finding 8): /readyz said 200 while the database could not be written."""
    deputy = deputy_on_postgres
    assert await readiness(deputy) == 200
    await set_read_only(deputy.database_url, True)
    try:
        assert await readiness(deputy) == 503, "reads work, writes do not: not ready"
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"{deputy.url}/healthz")).status_code == 200
    finally:
        await set_read_only(deputy.database_url, False)
    for _ in range(100):  # bounded: the pool reconnects on its next use
        if await readiness(deputy) == 200:
            break
        await asyncio.sleep(0.1)
    assert await readiness(deputy) == 200


async def test_a_sqlite_database_another_writer_holds_is_not_ready(deputy_on_sqlite: RunningDeputy) -> None:
    """Another process holds SQLite's write lock past Deputy's busy timeout: reads work, writes cannot."""
    deputy = deputy_on_sqlite
    assert await readiness(deputy) == 200
    path = deputy.database_url.split("///", 1)[1]
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        assert await readiness(deputy) == 503
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert await readiness(deputy) == 200


async def test_database_loss_closes_the_gate(deputy_on_postgres: RunningDeputy) -> None:
    deputy = deputy_on_postgres
    token, refresh_token = await tokens_for_alice(deputy)
    assert (await mcp_post(deputy, token)).status_code == 200
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"{deputy.url}/readyz")).status_code == 200

    name = deputy.database_url.rsplit("/", 1)[1]
    admin = await asyncpg.connect(PG_ADMIN)
    try:
        await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await admin.close()

    status = None
    for _ in range(100):  # bounded: the revocation view goes stale after about a second
        status = (await mcp_post(deputy, token)).status_code
        if status == 503:
            break
        await asyncio.sleep(0.1)
    assert status == 503, "calls are refused once revocations cannot be checked"

    async with httpx.AsyncClient() as http:
        response = await http.post(f"{deputy.url}/token", data={
            "grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": "test-public"})
        assert response.status_code == 503
        assert response.json()["error"] == "temporarily_unavailable"
        page = await http.get(f"{deputy.url}/authorize", params={"client_id": "test-public"})
        assert page.status_code == 503
        assert (await http.get(f"{deputy.url}/healthz")).status_code == 200, "the process is still alive"
        assert (await http.get(f"{deputy.url}/readyz")).status_code == 503, "but not ready to serve calls"
