"""Stopping the audit log lets a checkpoint in progress finish instead of cancelling it.

A cancelled checkpoint's transaction would end whenever the thread running it (SQLite's writer) got to it, with
the database's write lock held meanwhile; a stopping worker of ``serve --workers N`` must not leave that behind.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from sqlalchemy import func, select

from deputy.audit.log import AuditLog
from deputy.audit.note import NoteSigner, generate_signer_key
from deputy.audit.records import new_record
from deputy.audit.settings import AuditSettings
from deputy.storage.db import Database
from deputy.storage.tables import audit_checkpoints

ORIGIN = "deputy.test/deputy-audit"
SIGNER = NoteSigner.from_key(generate_signer_key(ORIGIN))



async def test_stop_waits_for_the_checkpoint_in_progress(fresh: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = AuditSettings(origin=ORIGIN, key_file=Path("/nonexistent/audit.key"), checkpoint_every=1,
                             checkpoint_interval_ms=3_600_000)
    log = AuditLog(fresh.engine, settings, SIGNER)
    started, calls = asyncio.Event(), {"started": 0, "finished": 0}
    sign = log.sign_checkpoint

    async def slow_sign() -> object:
        calls["started"] += 1
        started.set()
        await asyncio.sleep(0.3)  # stop() arrives while this checkpoint is under way
        result = await sign()
        calls["finished"] += 1
        return result

    monkeypatch.setattr(log, "sign_checkpoint", slow_sign)
    await log.start()
    await log.append(new_record("decision", decision_id="d1", outcome="allow"))
    await asyncio.wait_for(started.wait(), 30)
    await log.stop()
    assert calls["started"] >= 1
    assert calls["finished"] == calls["started"]  # none cut short
    async with fresh.engine.connect() as conn:
        assert (await conn.scalar(select(func.count()).select_from(audit_checkpoints)) or 0) >= 1
