"""Issue 12, policy bypass by parser differential, through a running Deputy and a real SDK upstream.

The stdio server of ``dated_stdio_server.py`` has ``schedule(when: datetime)``; a policy forbids instants
before 2026. ``"20260601"`` was June 2026 to Deputy (``datetime.fromisoformat``) and 1970-08-23 to the
upstream's pydantic (Unix seconds): Cedar allowed a call the policy forbids. It is now refused as not fitting
the tool's schema, and never reaches the upstream.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.databases import database_url
from tests.support.deputy_process import RunningDeputy, running_deputy
from tests.support.oauth_flow import mcp_post, tokens_for_alice

SERVER = "dated"
DATED_SERVER = str(Path(__file__).with_name("dated_stdio_server.py"))
POLICY_DENIED = -32003
POLICY = '''
@id("dated-all") permit (principal, action, resource);

@id("not-before-2026")
forbid (principal, action == Deputy::Action::"schedule", resource)
when { context.input.when < datetime("2026-01-01") };
'''


@pytest.fixture(scope="module", params=["sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def dated(backend: str, upstream_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDeputy]:
    directory = tmp_path_factory.mktemp(f"deputy-dated-{backend}")
    (directory / "dated-policies").mkdir()
    (directory / "dated-policies" / "dated.cedar").write_text(POLICY)
    extra = (f"\n[servers.{SERVER}]\ncommand = {json.dumps([sys.executable, DATED_SERVER])}\n"
             f'scopes = ["{SERVER}:tools"]\npolicies = "dated-policies"\n')
    with database_url(backend, directory) as url, running_deputy(directory, url, upstream_url, extra) as deputy:
        yield deputy


def _answer(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    if response.headers["content-type"].startswith("application/json"):
        return dict(response.json())
    events = [json.loads(line[len("data: "):]) for line in response.text.splitlines() if line.startswith("data: ")]
    return dict(events[-1])


async def _schedule(deputy: RunningDeputy, token: str, session: dict[str, str], call_id: int,
                    when: str) -> dict[str, Any]:
    call = {"jsonrpc": "2.0", "id": call_id, "method": "tools/call",
            "params": {"name": "schedule", "arguments": {"when": when}}}
    return _answer(await mcp_post(deputy, token, server=SERVER, headers=session, body=call))


async def test_a_date_time_the_upstream_reads_as_unix_seconds_is_refused(dated: RunningDeputy) -> None:
    """Issue 12: with a policy forbidding dates before 2026, the call with "20260601" is refused, not allowed
    (before the fix Cedar saw June 2026 and the tool ran on 1970-08-23T11:56:41Z)."""
    token, _ = await tokens_for_alice(dated, dated.resource(SERVER))
    opened = await mcp_post(dated, token, server=SERVER)
    assert opened.status_code == 200, opened.text
    session = {"Mcp-Session-Id": opened.headers["mcp-session-id"]}
    initialized = await mcp_post(dated, token, server=SERVER, headers=session,
                                 body={"jsonrpc": "2.0", "method": "notifications/initialized"})
    assert initialized.status_code == 202

    refused = await _schedule(dated, token, session, 2, "20260601")
    assert "result" not in refused, f"the upstream ran it: {refused}"
    assert refused["error"]["code"] == POLICY_DENIED
    assert refused["error"]["data"]["policies"] == []  # no policy decided: the argument does not fit the schema

    forbidden = await _schedule(dated, token, session, 3, "2026-01-01T00:30:00+01:00")  # 2025-12-31T23:30Z
    assert forbidden["error"]["code"] == POLICY_DENIED
    assert forbidden["error"]["data"]["policies"] == ["not-before-2026"]

    allowed = await _schedule(dated, token, session, 4, "2025-12-31T23:30:00-01:00")  # 2026-01-01T00:30Z
    assert allowed["result"]["content"][0]["text"] == "2025-12-31T23:30:00-01:00", allowed
