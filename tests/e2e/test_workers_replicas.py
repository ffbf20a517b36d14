"""Two replicas — two ``deputy serve`` processes of two workers each — on one PostgreSQL database, under concurrent
load through both at once: every call is answered, and the one audit log stays whole (contiguous leaves, every
checkpoint consistent, ``deputy audit verify`` passes)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.workers_support import CALL, sse_messages, wait_for_workers
from tests.support.audit_log import KillableDeputy, LogSnapshot, log_verifier, read_log, verify_log
from tests.support.databases import database_url
from tests.support.deputy_process import PASSWORD, RunningDeputy
from tests.support.eventually import eventually
from tests.support.oauth_flow import INITIALIZE, tokens_for_alice

CLIENTS = 8  # concurrent clients per replica
CALLS = 15  # calls per client


@pytest.fixture
def replicas(upstream_url: str, tmp_path: Path) -> Iterator[tuple[RunningDeputy, RunningDeputy]]:
    with database_url("postgresql", tmp_path) as db_url:
        # One log, one origin, one checkpoint key for both (deputy.audit.settings): the first replica's key file.
        config = f'''
[audit]
origin = "replicas.test/deputy-audit"
key_file = "{tmp_path / "a" / "data" / "audit.key"}"
checkpoint_interval_ms = 100
'''
        for name in ("a", "b"):
            (tmp_path / name).mkdir()
        killables = [KillableDeputy(tmp_path / name, db_url, upstream_url, config) for name in ("a", "b")]
        for killable in killables:
            killable.deputy.env["DEPUTY_WORKERS"] = "2"
        adding = killables[0].deputy.cli("users", "add", "alice", "--password", PASSWORD)
        assert adding.returncode == 0, adding.stderr
        try:
            for killable in killables:
                killable.start()
            running = [killable.deputy.__class__(**{**killable.deputy.__dict__, "process": killable.process})
                       for killable in killables]
            for deputy in running:
                wait_for_workers(deputy, 2)
            yield running[0], running[1]
        finally:
            for killable in killables:
                killable.stop()


async def _load(deputy: RunningDeputy) -> list[int]:
    """CLIENTS clients, each making CALLS tools/call on connections of their own; the ids of the answered calls."""
    token, _ = await tokens_for_alice(deputy, deputy.resource("demo"))
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json",
               "Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(timeout=60) as http:
        opened = await http.post(deputy.resource("demo"), json=INITIALIZE, headers=headers)
        assert opened.status_code == 200, opened.text
        headers["Mcp-Session-Id"] = opened.headers["mcp-session-id"]

    async def client(number: int, http: httpx.AsyncClient) -> list[int]:
        answered = []
        async with http:
            for call in range(CALLS):
                call_id = number * 1000 + call
                answer = await http.post(deputy.resource("demo"), json={**CALL, "id": call_id}, headers=headers)
                assert answer.status_code == 200, answer.text
                final = sse_messages(answer.text)[-1]
                assert final["id"] == call_id and final["result"]["structuredContent"] == {"result": 7}
                answered.append(call_id)
        return answered

    # Built before any call: building a client costs tens of milliseconds of CPU (its TLS context), and sixteen
    # built while the others' connections are open could hold the loop past Deputy's header deadline.
    clients = [httpx.AsyncClient(timeout=60) for _ in range(CLIENTS)]
    return [i for ids in await asyncio.gather(*(client(n, clients[n]) for n in range(CLIENTS))) for i in ids]


async def test_two_replicas_of_two_workers_keep_one_whole_audit_log_under_load(
        replicas: tuple[RunningDeputy, RunningDeputy]) -> None:
    first, second = replicas
    answered = await asyncio.gather(_load(first), _load(second))
    assert [len(ids) for ids in answered] == [CLIENTS * CALLS] * 2

    async def whole() -> LogSnapshot:
        # A call's outcome is recorded once its answer has gone out: the last ones may still be on their way.
        snapshot = await read_log(first.database_url)
        assert len(snapshot.of_type("call.outcome")) >= 2 * CLIENTS * CALLS
        return snapshot

    snapshot = await eventually(whole)
    verify_log(snapshot, log_verifier(first.data_dir))
    assert len(snapshot.decisions(tool="add", outcome="allow")) == 2 * CLIENTS * CALLS
    for deputy in replicas:
        verified = deputy.cli("audit", "verify")
        assert verified.returncode == 0, verified.stdout + verified.stderr
