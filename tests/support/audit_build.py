"""A small audit log for the verification tests: records in groups, a signed checkpoint after each group.

``build`` appends ``n`` decision records through Deputy's own :class:`deputy.audit.log.AuditLog` and signs a
checkpoint after every ``EVERY`` records (sizes 10, 20, ...); the other helpers read and change single rows, run
the verifier and the ``deputy audit`` commands, and write a configuration pointing at the test database.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, select, update
from typer.testing import CliRunner

from deputy.audit.export import export_jsonl
from deputy.audit.log import AuditLog
from deputy.audit.note import NoteSigner, generate_signer_key
from deputy.audit.records import new_record
from deputy.audit.settings import AuditSettings
from deputy.audit.verify import VerifyReport, verify_database
from deputy.cli import app
from deputy.storage.db import Database
from deputy.storage.tables import audit_checkpoints, audit_cosignatures, audit_head, audit_leaves, audit_nodes

ORIGIN = "deputy.test/deputy-audit"
SIGNER = NoteSigner.from_key(generate_signer_key(ORIGIN))
VKEY = SIGNER.verifier().vkey()
N = 50
EVERY = 10
WITNESS_URL = "http://witness.test"


def make_settings(key_file: Path = Path("/nonexistent/audit.key")) -> AuditSettings:
    return AuditSettings(origin=ORIGIN, key_file=key_file, checkpoint_every=1000, checkpoint_interval_ms=3_600_000)


async def clear(db: Database) -> None:
    async with db.engine.begin() as conn:
        for table in (audit_leaves, audit_nodes, audit_checkpoints, audit_head, audit_cosignatures):
            await conn.execute(delete(table))


@pytest.fixture
async def fresh(db: Database) -> AsyncIterator[Database]:
    await clear(db)
    yield db


def record(i: int, user: str = "alice") -> dict[str, Any]:
    return new_record(
        "decision",
        user=user,
        agent="agent-7",
        tool="delete_user" if i % 3 else "add",
        n=i,
        outcome="allow" if i % 4 else "deny",
        decision_id=f"d{i:04d}",
        txn=f"txn-{i // 10}",
    )


async def build(db: Database, n: int = N, user: str = "alice", log: AuditLog | None = None) -> AuditLog:
    """``n`` records in groups of EVERY, a signed checkpoint after each group (sizes 10, 20, ..., n)."""
    log = log or AuditLog(db.engine, make_settings(), SIGNER)
    for start in range(0, n, EVERY):
        await asyncio.gather(*(log.append(record(i, user)) for i in range(start, min(n, start + EVERY))))
        assert await log.sign_checkpoint() is not None
    return log


async def entry(db: Database, index: int) -> bytes:
    async with db.engine.connect() as conn:
        value = (await conn.execute(select(audit_leaves.c.record).where(audit_leaves.c.idx == index))).scalar()
    assert value is not None
    return bytes(value)


async def set_entry(db: Database, index: int, value: bytes) -> None:
    async with db.engine.begin() as conn:
        await conn.execute(update(audit_leaves).where(audit_leaves.c.idx == index).values(record=value))


async def verify(db: Database, **kwargs: Any) -> VerifyReport:
    return await verify_database(db.engine, SIGNER.verifier(), **kwargs)


def messages(report: VerifyReport) -> str:
    return "\n".join(p.message for p in report.problems)



async def export_to(log: AuditLog, path: Path) -> None:
    with path.open("w", encoding="utf-8") as handle:
        await export_jsonl(log, handle.write, batch=7)


def write_config(tmp_path: Path, database_url: str, key_file: Path) -> Path:
    path = tmp_path / "deputy.toml"
    path.write_text(f'''public_url = "http://127.0.0.1:8000"
data_dir = "{tmp_path / "data"}"
database_url = "{database_url}"

[servers.demo]
url = "http://127.0.0.1:9000/mcp"

[audit]
origin = "{ORIGIN}"
key_file = "{key_file}"
''')
    return path


async def cli(*args: str) -> Any:
    """``deputy audit ARGS`` in a thread: the commands run their own event loop."""
    return await asyncio.to_thread(CliRunner().invoke, app, ["audit", *args])
