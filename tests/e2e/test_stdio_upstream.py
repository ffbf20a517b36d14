"""A stdio upstream behind Deputy: one supervised process per MCP session, spoken to as Streamable HTTP."""

from __future__ import annotations

import json

import httpx
import pytest

from tests.support.deputy_process import RunningDeputy
from tests.support.oauth_flow import mcp_post, tokens_for_alice

SERVER = "local"


@pytest.fixture(scope="module", params=["sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _sse_messages(text: str) -> list[dict[str, object]]:
    return [json.loads(line[len("data: "):]) for line in text.splitlines() if line.startswith("data: ")]


async def _open_session(deputy: RunningDeputy, token: str) -> str:
    response = await mcp_post(deputy, token, server=SERVER)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    (answer,) = _sse_messages(response.text)
    assert answer["id"] == 1 and "result" in answer
    session = response.headers["mcp-session-id"]
    initialized = await mcp_post(deputy, token, server=SERVER, headers={"Mcp-Session-Id": session},
                                 body={"jsonrpc": "2.0", "method": "notifications/initialized"})
    assert initialized.status_code == 202
    return session


async def test_session_lifecycle_over_stdio(deputy: RunningDeputy) -> None:
    token, _ = await tokens_for_alice(deputy, deputy.resource(SERVER))
    session = await _open_session(deputy, token)
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "add", "arguments": {"a": 3, "b": 4}}}
    streamed = await mcp_post(deputy, token, server=SERVER, headers={"Mcp-Session-Id": session}, body=call)
    assert _sse_messages(streamed.text)[-1]["result"]["structuredContent"] == {"result": 7}  # type: ignore[index]

    as_json = await mcp_post(deputy, token, server=SERVER, body={**call, "id": 3},
                             headers={"Mcp-Session-Id": session, "Accept": "application/json"})
    assert as_json.headers["content-type"] == "application/json"
    assert as_json.json()["id"] == 3

    other = await _open_session(deputy, token)
    assert other != session, "each initialize starts its own process and session"

    async with httpx.AsyncClient() as http:
        ended = await http.delete(deputy.resource(SERVER), headers={
            "Authorization": f"Bearer {token}", "Mcp-Session-Id": session})
    assert ended.status_code == 200
    gone = await mcp_post(deputy, token, server=SERVER, headers={"Mcp-Session-Id": session}, body=call)
    assert gone.status_code == 404, "a deleted session is unknown; the client re-initializes"
    still = await mcp_post(deputy, token, server=SERVER, headers={"Mcp-Session-Id": other}, body={**call, "id": 4})
    assert still.status_code == 200, "other sessions are unaffected"


async def test_requests_without_a_session_are_refused(deputy: RunningDeputy) -> None:
    token, _ = await tokens_for_alice(deputy, deputy.resource(SERVER))
    ping = {"jsonrpc": "2.0", "id": 9, "method": "ping"}
    assert (await mcp_post(deputy, token, server=SERVER, body=ping)).status_code == 400
    malformed = await mcp_post(deputy, token, server=SERVER, headers={"Content-Type": "application/json"},
                           body={"not": "json-rpc"})
    assert malformed.status_code == 400


async def test_a_body_spread_over_lines_reaches_the_process_as_one_line(deputy: RunningDeputy) -> None:
    """Stdio is newline-delimited: a pretty-printed body (its line breaks only whitespace, string escapes
    kept) is sent as the one message it is, not as several broken lines."""
    token, _ = await tokens_for_alice(deputy, deputy.resource(SERVER))
    session = await _open_session(deputy, token)
    call = {"jsonrpc": "2.0", "id": 5, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "two\nlines"}}}
    pretty = json.dumps(call, indent=2).replace("\n", "\r\n")
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(deputy.resource(SERVER), content=pretty, headers={
            "Authorization": f"Bearer {token}", "Mcp-Session-Id": session, "Content-Type": "application/json",
            "Accept": "application/json", "MCP-Protocol-Version": "2025-06-18"})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["id"] == 5
    assert answer["result"]["content"][0]["text"] == "two\nlines"  # the escaped newline arrived intact
