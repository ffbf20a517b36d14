"""Records nobody waits for (a call's outcome) share the next waited-for record's commit; nothing is lost for it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import select

from deputy.audit import log as audit_log
from deputy.audit.log import AuditLog, AuditUnavailable
from deputy.audit.note import NoteSigner, generate_signer_key
from deputy.audit.records import canonical, new_record
from deputy.audit.settings import AuditSettings
from deputy.storage.db import Database
from deputy.storage.tables import audit_leaves

ORIGIN = "deputy.test/deputy-audit"
SIGNER = NoteSigner.from_key(generate_signer_key(ORIGIN))


def new_log(db: Database, batch_max: int = 512) -> AuditLog:
    settings = AuditSettings(origin=ORIGIN, key_file=Path("/nonexistent/audit.key"), checkpoint_every=1000,
                             checkpoint_interval_ms=3_600_000, batch_max=batch_max)
    return AuditLog(db.engine, settings, SIGNER)



@pytest.fixture
def endless_linger(monkeypatch: pytest.MonkeyPatch) -> None:
    """A record nobody waits for would wait for company for an hour: what commits it is then never the clock."""
    monkeypatch.setattr(audit_log, "LINGER_SECONDS", 3600.0)


def outcome(n: int) -> dict[str, object]:
    return new_record("call.outcome", decision_id=f"d{n}", status=200)


def decision(n: int) -> dict[str, object]:
    return new_record("decision", decision_id=f"d{n}", outcome="allow")


async def stored(db: Database) -> list[bytes]:
    async with db.engine.connect() as conn:
        return [bytes(r) for r in (await conn.execute(select(audit_leaves.c.record).order_by(audit_leaves.c.idx)))
                .scalars()]


async def test_a_waited_for_record_takes_the_lingering_ones_into_its_commit(
        fresh: Database, endless_linger: None) -> None:
    log = new_log(fresh)
    records = [outcome(1), outcome(2), decision(3)]
    lingering = [asyncio.create_task(log.append(record, linger=True)) for record in records[:2]]
    await asyncio.sleep(0.05)
    assert not any(task.done() for task in lingering) and await stored(fresh) == []  # waiting for company
    receipt = await log.append(records[2])  # never waits: it is what the lingering ones were waiting for
    assert [(await task).index for task in lingering] + [receipt.index] == [0, 1, 2]
    assert log.commits == 1
    assert await stored(fresh) == [canonical(record) for record in records]
    await log.stop()


async def test_stop_commits_the_lingering_records(fresh: Database, endless_linger: None) -> None:
    log = new_log(fresh)
    lingering = asyncio.create_task(log.append(outcome(1), linger=True))
    await asyncio.sleep(0.05)
    await log.stop()
    assert (await lingering).index == 0
    assert len(await stored(fresh)) == 1


async def test_a_full_batch_of_lingering_records_is_not_held(fresh: Database, endless_linger: None) -> None:
    log = new_log(fresh, batch_max=4)
    receipts = await asyncio.gather(*(log.append(outcome(n), linger=True) for n in range(4)))
    assert [r.index for r in receipts] == [0, 1, 2, 3] and log.commits == 1
    await log.stop()


async def test_lingering_records_alone_are_committed_once_the_linger_passes(fresh: Database) -> None:
    log = new_log(fresh)
    receipt = await asyncio.wait_for(log.append(outcome(1), linger=True), timeout=30)
    assert receipt.index == 0 and len(await stored(fresh)) == 1
    await log.stop()


async def test_a_failed_commit_fails_the_lingering_records_with_it(fresh: Database, endless_linger: None,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    log = new_log(fresh)

    async def failing(batch: object) -> tuple[int, int]:
        raise OSError("disk gone")

    monkeypatch.setattr(log, "_commit", failing)
    lingering = asyncio.create_task(log.append(outcome(1), linger=True))
    with pytest.raises(AuditUnavailable):
        await log.append(decision(2))
    with pytest.raises(AuditUnavailable):
        await lingering
    monkeypatch.undo()
    await log.stop()
    assert await stored(fresh) == []
