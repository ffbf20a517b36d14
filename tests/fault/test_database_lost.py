"""The database lost mid-batch: calls are refused, none is forwarded without its record, service comes back.

PostgreSQL: while four clients call ``echo``, every backend serving Deputy is terminated
(``pg_terminate_backend``), again and again, each time after more answers came back — connections die
mid-transaction, mid-append, mid-commit. SQLite: another process holds the write lock
(``BEGIN EXCLUSIVE``) past Deputy's busy timeout, so its appends cannot commit. In both, each call is
answered (200) or refused (503 with a JSON-RPC error, fail closed); nothing the upstream received lacks a
committed allowing ``decision``; the log verifies; calls succeed again once the database is back; the
process lives and logs no traceback.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from tests.fault.harness import FaultyDeputy, Load, deputy_tcp_peers, eventually_answered, faulty_deputy, marker
from tests.support.databases import PG_ADMIN

TERMINATIONS = 6
POSTGRES_PORT = 5432


@pytest.fixture(scope="module")
def faulty(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultyDeputy]:
    with faulty_deputy(backend, tmp_path_factory.mktemp(f"fault-db-{backend}")) as started:
        yield started


async def terminate_deputy_backends(faulty: FaultyDeputy) -> int:
    """Terminate the PostgreSQL backends at the other end of Deputy's own connections (not the probe's)."""
    ports = [local for local, remote in deputy_tcp_peers(faulty.pid) if remote == POSTGRES_PORT]
    admin = await asyncpg.connect(PG_ADMIN, timeout=10)
    try:
        rows = await admin.fetch("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 "WHERE client_port = ANY($1::int[]) AND pid <> pg_backend_pid()", ports)
    finally:
        await admin.close()
    return sum(1 for row in rows if row[0])


class WriteLock:
    """Another process's ``BEGIN EXCLUSIVE`` on the SQLite file, held in a thread until released."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.held = threading.Event()
        self.release = threading.Event()
        self.thread = threading.Thread(target=self._hold, daemon=True)

    def _hold(self) -> None:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            conn.execute("BEGIN EXCLUSIVE")
            self.held.set()
            self.release.wait(120)
            conn.execute("ROLLBACK")
        finally:
            conn.close()

    def __enter__(self) -> WriteLock:
        self.thread.start()
        assert self.held.wait(30), "could not take the SQLite write lock"
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.thread.join(30)


async def test_database_lost_mid_batch_refuses_and_recovers(faulty: FaultyDeputy) -> None:
    prefix = marker("db-lost")
    load = Load(faulty, prefix, clients=4)
    await load.start()
    await load.until(lambda: len(load.answered) >= 4, "calls to flow")
    if faulty.deputy.database_url.startswith("sqlite"):
        with WriteLock(Path(faulty.deputy.database_url.split("///", 1)[1])):
            await load.until(lambda: len(load.refused) >= 2, "calls refused while the database is locked")
        terminated = 0
    else:
        terminated = 0
        for _ in range(TERMINATIONS):
            terminated += await terminate_deputy_backends(faulty)
            await load.until_more(lambda: load.responses, 3, "answers after a termination")
    await load.stop()
    await eventually_answered(faulty, f"{prefix} after")

    print(f"\n[{faulty.deputy.database_url.split(':', 1)[0]}] database lost: {terminated} backends terminated; "
          f"{len(load.answered)} answered, {len(load.refused)} refused, {load.broken} connection errors, "
          f"{len(faulty.forwarded(prefix))} forwarded")
    assert load.unexpected == [], load.unexpected[:5]
    assert load.broken == 0, "Deputy dropped connections instead of answering"
    assert set(load.answered) <= set(faulty.forwarded(prefix))
    assert not set(load.refused) & set(faulty.forwarded(prefix)), "a refused call reached the upstream"
    missing = await faulty.check_log(prefix)
    assert missing == [], f"forwarded without a committed allowing decision: {missing[:5]}"
    assert faulty.alive()
    assert "Traceback" not in faulty.log_text(), faulty.log_text()[-3000:]
