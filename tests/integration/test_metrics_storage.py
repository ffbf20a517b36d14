"""What the metrics read from storage, on both backends (issue 13): audit batches, commit latency, queue depth and
checkpoint age; pending approvals; the revocation view's staleness."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import create_async_engine

from deputy import clock
from deputy.audit.log import AuditLog, AuditUnavailable
from deputy.audit.note import NoteSigner, generate_signer_key
from deputy.audit.records import new_record
from deputy.audit.settings import AuditSettings
from deputy.clock import now
from deputy.gateway.revocations import RevocationList
from deputy.storage.approvals import ApprovalRepository
from deputy.storage.db import Database
from deputy.storage.grants import GrantRepository
from deputy.storage.tables import approvals, audit_checkpoints, audit_head, audit_leaves, audit_nodes
from deputy.storage.users import User
from deputy.telemetry.metrics import Metrics
from tests.integration.conftest import unique

ORIGIN = "deputy.test/deputy-audit"
SIGNER = NoteSigner.from_key(generate_signer_key(ORIGIN))


def _settings() -> AuditSettings:
    return AuditSettings(origin=ORIGIN, key_file=Path("/nonexistent/audit.key"), checkpoint_every=1000,
                         checkpoint_interval_ms=3_600_000, batch_max=512)


@pytest.fixture
async def fresh(db: Database) -> AsyncIterator[Database]:
    """An empty audit log and no approvals: each test counts from zero."""
    async with db.engine.begin() as conn:
        for table in (audit_leaves, audit_nodes, audit_checkpoints, audit_head, approvals):
            await conn.execute(delete(table))
    yield db


def _sample(metrics: Metrics, name: str) -> float:
    value = metrics.registry.get_sample_value(name)
    assert value is not None, name
    return value


async def test_audit_batches_commits_and_queue_are_counted(fresh: Database) -> None:
    metrics = Metrics()
    log = AuditLog(fresh.engine, _settings(), SIGNER, metrics=metrics)
    await log.start()
    try:
        records = 40
        await asyncio.gather(*(log.append(new_record("decision", n=n)) for n in range(records)))
        # Every record in exactly one committed batch; one commit timed per batch.
        assert _sample(metrics, "deputy_audit_append_batch_records_sum") == records
        assert _sample(metrics, "deputy_audit_append_batch_records_count") == log.commits
        assert _sample(metrics, "deputy_audit_commit_duration_seconds_count") == log.commits
        # Each commit's time lands in a bucket: the +Inf bucket holds every one of them.
        assert metrics.registry.get_sample_value("deputy_audit_commit_duration_seconds_bucket", {"le": "+Inf"}) \
            == log.commits
        assert _sample(metrics, "deputy_audit_queue_depth") == 0
        assert _sample(metrics, "deputy_audit_commit_failures_total") == 0
    finally:
        await log.stop()


async def test_queue_depth_is_read_at_scrape_time(fresh: Database) -> None:
    metrics = Metrics()
    log = AuditLog(fresh.engine, _settings(), SIGNER, metrics=metrics)
    appends = [asyncio.ensure_future(log.append(new_record("decision", n=n))) for n in range(5)]
    # The appends have queued their records; the writer has not yet taken them (no await since).
    await asyncio.sleep(0)
    assert _sample(metrics, "deputy_audit_queue_depth") >= 1
    await asyncio.gather(*appends)
    assert _sample(metrics, "deputy_audit_queue_depth") == 0
    await log.stop()


async def test_a_failed_commit_is_counted(fresh: Database) -> None:
    metrics = Metrics()
    log = AuditLog(fresh.engine, _settings(), SIGNER, metrics=metrics)
    # A head that names leaves the table does not have: the transaction's first leaf collides with none, but
    # its compact range cannot be read, so the batch fails and all its records with it.
    async with fresh.engine.begin() as conn:
        await conn.execute(audit_head.insert().values(id=1, size=5, compact=b"not a compact range"))
    with pytest.raises(AuditUnavailable):
        await log.append(new_record("decision", n=1))
    assert _sample(metrics, "deputy_audit_commit_failures_total") == 1
    assert _sample(metrics, "deputy_audit_append_batch_records_count") == 0
    await log.stop()


async def test_checkpoint_age_is_nan_until_one_is_signed_then_its_age(fresh: Database) -> None:
    metrics = Metrics()
    log = AuditLog(fresh.engine, _settings(), SIGNER, metrics=metrics)
    with clock.frozen() as frozen:
        await log.start()
        assert math.isnan(_sample(metrics, "deputy_audit_checkpoint_age_seconds"))
        await log.append(new_record("decision", n=1))
        assert await log.sign_checkpoint() is not None
        assert _sample(metrics, "deputy_audit_checkpoint_age_seconds") == 0
        frozen.advance(42)
        assert _sample(metrics, "deputy_audit_checkpoint_age_seconds") == 42
        await log.stop()  # nothing new to sign: the age stays the newest checkpoint's


async def test_checkpoint_age_follows_a_checkpoint_another_replica_signed(fresh: Database, url: str) -> None:
    other = Database(url)
    mine, theirs = Metrics(), Metrics()
    here = AuditLog(fresh.engine, _settings(), SIGNER, metrics=mine)
    there = AuditLog(other.engine, _settings(), SIGNER, metrics=theirs)
    try:
        with clock.frozen() as frozen:
            await here.start()
            await there.append(new_record("decision", n=1))
            await there.sign_checkpoint()
            frozen.advance(7)
            assert await here.sign_checkpoint() is None  # nothing of its own to sign: it reads the newest
            assert _sample(mine, "deputy_audit_checkpoint_age_seconds") == 7
    finally:
        await here.stop()
        await there.stop()
        await other.dispose()


async def test_pending_approvals_are_counted_without_decided_or_expired_ones(fresh: Database) -> None:
    repo = ApprovalRepository(fresh.engine)

    async def hold(tool: str) -> str:
        approval = await repo.create(server="demo", tool=tool, arguments={"id": 1}, user_id=unique("alice"),
                                     agent="agent-1", actors=[{"sub": "agent-1"}])
        return approval.approval_id

    assert await repo.count_pending() == 0
    ids = [await hold(f"tool-{n}") for n in range(4)]
    assert await repo.count_pending() == 4
    await repo.approve(ids[0], User("bob", "bob"))
    await repo.deny(ids[1], User("bob", "bob"))
    async with fresh.engine.begin() as conn:
        await conn.execute(update(approvals).where(approvals.c.approval_id == ids[2]).values(expires_at=now() - 1))
    assert await repo.count_pending() == 1

    metrics = Metrics()
    metrics.count_at_scrape(metrics.approvals_pending, repo.count_pending)
    await metrics.read_counts()
    assert _sample(metrics, "deputy_approvals_pending") == 1
    await metrics.close()


async def test_pending_approvals_are_nan_while_the_database_cannot_be_read(url: str) -> None:
    # Nothing listens on port 9 (discard); a SQLite file in a directory that does not exist cannot be opened.
    gone = create_async_engine(url.replace("127.0.0.1:5432", "127.0.0.1:9") if "postgresql" in url
                               else "sqlite+aiosqlite:////nonexistent-directory/deputy.db")
    metrics = Metrics()
    metrics.count_at_scrape(metrics.approvals_pending, ApprovalRepository(gone).count_pending)
    try:
        await metrics.read_counts()
        assert math.isnan(_sample(metrics, "deputy_approvals_pending"))
    finally:
        await gone.dispose()


async def test_revocation_staleness_is_the_time_since_the_last_read(db: Database) -> None:
    view = RevocationList(GrantRepository(db.engine, access_token_ttl=600), max_staleness=5.0)
    with clock.frozen() as frozen:
        await view.refresh()
        assert view.staleness() == 0
        frozen.advance(3.5)
        assert view.staleness() == 3.5
        await view.refresh()
        assert view.staleness() == 0
