"""Errors Deputy logs carry no argument value nor a statement's parameters (issue 13, the audit of log calls).

Each was a path from a client's argument to a log line: rfc8785's message quotes the integer it refuses (logged
when an approval's call hash or an audit record cannot be computed); a policy evaluation failure was logged with
its traceback, whose last line is the exception's message; SQLAlchemy's errors (logged by the audit log's
writer) end with the statement's parameters, a record's bytes among them.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import cedarpy
import pytest
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from deputy.canonical_json import NotCanonicalJson, canonical_json
from deputy.storage.db import Database
from deputy.telemetry.logs import JsonLines, TextLines
from tests.unit.test_policy_engine import caller, engine_with

MARKER = "MARKargument5f3c9e"


def test_a_refused_integer_is_not_quoted() -> None:
    with pytest.raises(NotCanonicalJson) as refused:
        canonical_json({"amount": 2**60 + 7})
    assert str(2**60 + 7) not in str(refused.value)
    assert "2^53" in str(refused.value)


def test_a_failing_policy_evaluation_logs_no_argument(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    def failing(request: dict[str, Any], *_: object, **__: object) -> None:
        raise RuntimeError(f"cannot evaluate {request['context']['input']}")

    monkeypatch.setattr(cedarpy, "is_authorized", failing)  # the engine calls cedarpy.is_authorized
    engine = engine_with(tmp_path)
    with caplog.at_level(logging.DEBUG, logger="deputy.policy.engine"):
        decision = engine.decide(caller(), "tools/call", "echo", {"text": MARKER})
    assert not decision.allowed
    logged = [f.format(record) for record in caplog.records for f in (JsonLines(True), TextLines(True))]
    assert any("policy evaluation failed: RuntimeError" in line for line in logged)
    assert not [line for line in logged if MARKER in line]


async def test_a_database_error_does_not_carry_the_statement_parameters(tmp_path: Path) -> None:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'deputy.db'}")
    try:
        with pytest.raises(SQLAlchemyError) as failed:
            async with database.engine.begin() as conn:
                await conn.execute(text("INSERT INTO no_such_table VALUES (:value)"), {"value": MARKER})
        assert "no_such_table" in str(failed.value) and MARKER not in str(failed.value)
        assert MARKER not in repr(failed.value)
    finally:
        await database.engine.dispose()
