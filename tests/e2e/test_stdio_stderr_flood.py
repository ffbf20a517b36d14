"""A stdio server's stderr and stdout cannot stop Deputy's readers (issue 12, second review).

One Deputy with the stdio server of ``stderr_flood_stdio_server.py``. Over real pipes: a stderr line over the
4 MiB stream limit followed by more stderr than the stream buffer and the pipe hold, and an answer nested
10,000 levels deep.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.databases import database_url
from tests.support.deputy_process import RunningDeputy, running_deputy
from tests.support.oauth_flow import mcp_post, tokens_for_alice

SERVER = "flood"
FLOOD_SERVER = str(Path(__file__).with_name("stderr_flood_stdio_server.py"))


@pytest.fixture(scope="module", params=["postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def flooded(backend: str, upstream_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDeputy]:
    directory = tmp_path_factory.mktemp(f"deputy-stderr-flood-{backend}")
    extra = (f"\n[servers.{SERVER}]\ncommand = {json.dumps([sys.executable, FLOOD_SERVER])}\n"
             f'scopes = ["{SERVER}:tools"]\n')
    with database_url(backend, directory) as url, running_deputy(directory, url, upstream_url, extra) as deputy:
        yield deputy


def _messages(response: httpx.Response) -> list[dict[str, object]]:
    if response.headers["content-type"].startswith("application/json"):
        return [response.json()]
    return [json.loads(line[len("data: "):]) for line in response.text.splitlines() if line.startswith("data: ")]


async def _session(deputy: RunningDeputy, token: str) -> dict[str, str]:
    opened = await mcp_post(deputy, token, server=SERVER)
    assert opened.status_code == 200, opened.text
    session = {"Mcp-Session-Id": opened.headers["mcp-session-id"]}
    initialized = await mcp_post(deputy, token, server=SERVER, headers=session,
                                 body={"jsonrpc": "2.0", "method": "notifications/initialized"})
    assert initialized.status_code == 202
    return session


def _call(call_id: int, tool: str) -> dict[str, object]:
    return {"jsonrpc": "2.0", "id": call_id, "method": "tools/call", "params": {"name": tool, "arguments": {}}}


def _log(deputy: RunningDeputy) -> str:
    return (deputy.data_dir.parent / "deputy.log").read_text(errors="replace")


async def test_a_stderr_line_over_the_limit_and_a_flood_after_it_never_stop_the_answers(
        flooded: RunningDeputy) -> None:
    """Issue 12: the stderr reader died on a line over 4 MiB (readline's limit) and stopped draining; the server
    then blocked on its full stderr pipe and the call hung. Now every answer comes (what is logged of each line:
    tests/unit/test_stdio_stderr.py)."""
    token, _ = await tokens_for_alice(flooded, flooded.resource(SERVER))
    session = await _session(flooded, token)
    # Without a drained stderr the server never gets to its answer: the client's read timeout fails the test.
    first = await mcp_post(flooded, token, server=SERVER, headers=session, body=_call(2, "flood"))
    assert first.status_code == 200, first.text
    assert _messages(first)[-1]["result"] == {"content": [{"type": "text", "text": "flooded"}]}
    second = await mcp_post(flooded, token, server=SERVER, headers=session, body=_call(3, "flood"))
    assert second.status_code == 200 and _messages(second)[-1]["id"] == 3, "the session outlives the flood"

    assert "Traceback" not in _log(flooded), _log(flooded)[-3000:]


async def test_an_answer_nested_too_deeply_ends_the_session_with_a_json_rpc_error(flooded: RunningDeputy) -> None:
    """Issue 12: json.loads of a stdio line recursed without bound (RecursionError in the reader task). Now the
    line is refused before parsing: the session ends, the waiting client gets a JSON-RPC error, Deputy lives."""
    token, _ = await tokens_for_alice(flooded, flooded.resource(SERVER))
    session = await _session(flooded, token)
    answered = await mcp_post(flooded, token, server=SERVER, body=_call(4, "nested"),
                              headers={**session, "Accept": "application/json"})
    assert answered.status_code == 502
    assert answered.json()["error"]["code"] == -32603 and answered.json()["id"] == 4
    assert "nested deeper than" in _log(flooded) and "RecursionError" not in _log(flooded)
    again = await mcp_post(flooded, token, server=SERVER, headers=session, body=_call(5, "flood"))
    assert again.status_code == 404, "the session ended"
    fresh = await _session(flooded, token)
    assert (await mcp_post(flooded, token, server=SERVER, headers=fresh, body=_call(6, "flood"))).status_code == 200
