"""A stdio upstream behind Deputy: one supervised process per MCP session, spoken to as Streamable HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.support.databases import database_url
from tests.support.deputy_process import (
    CONFIDENTIAL_CLIENT,
    CONFIDENTIAL_SECRET,
    RunningDeputy,
    running_deputy,
)
from tests.support.oauth_flow import mcp_post, tokens_for_alice

SERVER = "local"
BOB_PASSWORD = "bob's own long passphrase"


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


@pytest.fixture(scope="module")
def capped(backend: str, upstream_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDeputy]:
    """A Deputy whose stdio sessions are capped low: two per user, three per client; users alice and bob."""
    directory = tmp_path_factory.mktemp(f"deputy-stdio-caps-{backend}")
    extra = "\n[limits]\nstdio_sessions_per_user = 2\nstdio_sessions_per_client = 3\n"
    with database_url(backend, directory) as url, running_deputy(directory, url, upstream_url, extra) as deputy:
        added = deputy.cli("users", "add", "bob", "--password", BOB_PASSWORD)
        assert added.returncode == 0, added.stderr
        yield deputy


async def _end(deputy: RunningDeputy, token: str, *sessions: str) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        for session in sessions:
            ended = await http.delete(deputy.resource(SERVER), headers={
                "Authorization": f"Bearer {token}", "Mcp-Session-Id": session})
            assert ended.status_code == 200, ended.text


def _refused_by(response: httpx.Response, setting: str, cap: int) -> None:
    """A session refused past a principal's own cap: 429, Retry-After, a JSON-RPC error naming the limit."""
    assert response.status_code == 429, response.text
    assert int(response.headers["retry-after"]) > 0
    answer = response.json()
    assert answer["id"] == 1, "the error answers the initialize request"
    assert answer["error"]["data"] == {"limit": f"limits.{setting}", "value": cap}
    assert f"limits.{setting} = {cap}" in answer["error"]["message"]


async def test_one_user_cannot_take_every_stdio_session(capped: RunningDeputy) -> None:
    """Issue 11 finding 5: past stdio_sessions_per_user a user gets no new session; another user still does,
    and a session ended frees its place."""
    alice, _ = await tokens_for_alice(capped, capped.resource(SERVER))
    bob, _ = await tokens_for_alice(capped, capped.resource(SERVER), username="bob", password=BOB_PASSWORD)
    first, second = await _open_session(capped, alice), await _open_session(capped, alice)
    _refused_by(await mcp_post(capped, alice, server=SERVER), "stdio_sessions_per_user", 2)
    bobs = await _open_session(capped, bob)
    await _end(capped, alice, first)
    third = await _open_session(capped, alice)
    await _end(capped, alice, second, third)
    await _end(capped, bob, bobs)


async def test_one_client_cannot_take_every_stdio_session(capped: RunningDeputy) -> None:
    """Issue 11 finding 5: past stdio_sessions_per_client no user gets a new session through that client, while
    the same user through another client still does."""
    alice, _ = await tokens_for_alice(capped, capped.resource(SERVER))
    bob, _ = await tokens_for_alice(capped, capped.resource(SERVER), username="bob", password=BOB_PASSWORD)
    alices = [await _open_session(capped, alice), await _open_session(capped, alice)]
    bobs = [await _open_session(capped, bob)]  # the public client now holds three
    _refused_by(await mcp_post(capped, bob, server=SERVER), "stdio_sessions_per_client", 3)
    bob_elsewhere, _ = await tokens_for_alice(capped, capped.resource(SERVER), username="bob",
                                              password=BOB_PASSWORD, client_id=CONFIDENTIAL_CLIENT,
                                              basic=(CONFIDENTIAL_CLIENT, CONFIDENTIAL_SECRET))
    bobs_elsewhere = await _open_session(capped, bob_elsewhere)
    await _end(capped, alice, *alices)
    await _end(capped, bob, *bobs)
    await _end(capped, bob_elsewhere, bobs_elsewhere)
