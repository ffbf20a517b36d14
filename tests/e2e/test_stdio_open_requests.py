"""A stdio session's open requests: one per id, none waited on past its client, none buffered without bound.

Against a real ``deputy serve`` and a real stdio server (``held_stdio_server.py``, which holds calls until told, floods
a call with progress, writes each message it reads to a file, and hands ids back rounded as JavaScript does). What
reached the process is read from that file, when an answer was routed from the order of the server's own lines, and
what Deputy did from its audit log; nothing waits on a clock.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from deputy.gateway.stdio_session import REQUEST_BACKLOG_BYTES
from tests.support.audit_log import read_log
from tests.support.databases import database_url
from tests.support.deputy_process import RunningDeputy, running_deputy
from tests.support.eventually import eventually
from tests.support.oauth_flow import mcp_post, tokens_for_alice

SERVER = "held"
HELD_SERVER = str(Path(__file__).with_name("held_stdio_server.py"))
JSON_ONLY = {"Accept": "application/json"}
IN_PROGRESS = "a request with this id is already in progress in this session"


@dataclass
class Held:
    deputy: RunningDeputy
    received_file: Path

    def received(self) -> list[str]:
        """Every message the server's processes have read, in order: ``method tool id``."""
        return self.received_file.read_text().splitlines() if self.received_file.exists() else []

    def log(self) -> str:
        return (self.deputy.data_dir.parent / "deputy.log").read_text(errors="replace")


@pytest.fixture(scope="module")
def held(upstream_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Held]:
    directory = tmp_path_factory.mktemp("deputy-stdio-open-requests")
    received = directory / "received"
    command = [sys.executable, HELD_SERVER, "--received", str(received)]
    # big_integers = "pass": ids beyond 2^53 reach the server, which reads them as doubles (as Node does).
    extra = (f'\n[servers.{SERVER}]\ncommand = {json.dumps(command)}\nscopes = ["{SERVER}:tools"]\n'
             'big_integers = "pass"\n')
    with database_url("sqlite", directory) as url, running_deputy(directory, url, upstream_url, extra) as deputy:
        yield Held(deputy, received)


def _call(request_id: int, tool: str, arguments: dict[str, Any] | None = None,
          progress: str | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {"name": tool, "arguments": arguments or {}}
    if progress is not None:
        params["_meta"] = {"progressToken": progress}
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": params}


async def _session(held: Held, token: str) -> dict[str, str]:
    opened = await mcp_post(held.deputy, token, server=SERVER)
    assert opened.status_code == 200, opened.text
    session = {"Mcp-Session-Id": opened.headers["mcp-session-id"]}
    initialized = await mcp_post(held.deputy, token, server=SERVER, headers=session,
                                 body={"jsonrpc": "2.0", "method": "notifications/initialized"})
    assert initialized.status_code == 202
    return session


async def _reached_server(held: Held, line: str) -> None:
    async def reached() -> None:
        assert line in held.received()

    await eventually(reached)


def _send_and_stay(held: Held, token: str, session: dict[str, str], body: dict[str, Any]) -> socket.socket:
    """A JSON-answered call sent on a connection of its own, never read; the caller closes it (the client leaving)."""
    parts = urlsplit(held.deputy.resource(SERVER))
    assert parts.hostname is not None and parts.port is not None
    payload = json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json", **JSON_ONLY, **session}
    head = "".join(f"{key}: {value}\r\n" for key, value in headers.items())
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    sock.sendall(f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n{head}Content-Length: {len(payload)}\r\n\r\n"
                 .encode() + payload)
    return sock


def _refused_as_in_progress(response: httpx.Response, request_id: int) -> None:
    assert response.status_code == 400, response.text
    answer = response.json()
    assert answer["id"] == request_id
    assert answer["error"]["code"] == -32600 and answer["error"]["message"] == IN_PROGRESS


async def _outcome(held: Held, tool: str) -> tuple[int, bool]:
    """The (status, complete) of the one ``call.outcome`` of the one call of ``tool``, once it is recorded."""
    async def recorded() -> tuple[int, bool]:
        log = await read_log(held.deputy.database_url)
        decisions = log.decisions(tool=tool)
        assert len(decisions) == 1, decisions
        outcomes = log.outcomes_of(str(decisions[0].record["decision_id"]))
        assert len(outcomes) == 1, f"{tool}: no call.outcome recorded (yet)"
        return int(outcomes[0].record["status"]), bool(outcomes[0].record["complete"])

    return await eventually(recorded)


async def test_a_request_whose_id_is_already_open_is_refused_and_never_sent(held: Held) -> None:
    """Review finding: a second request with an open request's id replaced the first in the session's routing, so
    the first waited for an answer that could no longer reach it. Now the second is refused at once, the process never
    sees it, and the first is answered."""
    token, _ = await tokens_for_alice(held.deputy, held.deputy.resource(SERVER))
    session = await _session(held, token)
    first = asyncio.create_task(mcp_post(held.deputy, token, server=SERVER, body=_call(1, "hold-twice"),
                                         headers={**session, **JSON_ONLY}))
    await _reached_server(held, "tools/call hold-twice 1")
    again = await mcp_post(held.deputy, token, server=SERVER, body=_call(1, "hold-twice"),
                           headers={**session, **JSON_ONLY})
    _refused_as_in_progress(again, 1)
    streamed = await mcp_post(held.deputy, token, server=SERVER, body=_call(1, "other"), headers=session)
    _refused_as_in_progress(streamed, 1)

    released = await mcp_post(held.deputy, token, server=SERVER, body=_call(2, "release"),
                              headers={**session, **JSON_ONLY})
    assert released.status_code == 200, released.text
    answered = await first
    assert answered.status_code == 200 and answered.json()["id"] == 1, answered.text
    assert answered.json()["result"]["content"][0]["text"] == "released"
    assert held.received().count("tools/call hold-twice 1") == 1, "the refused request never reached the process"
    assert "tools/call other 1" not in held.received()


async def test_a_json_answered_request_stops_waiting_when_its_client_leaves(held: Held) -> None:
    """Review finding: a request answered as JSON waited for its answer even once its client had gone (forever, if
    the answer could not come), and its call was never recorded. Now it stops when its client leaves: its
    ``call.outcome`` says 504, not read, and its id is free again in the session."""
    token, _ = await tokens_for_alice(held.deputy, held.deputy.resource(SERVER))
    session = await _session(held, token)
    client = _send_and_stay(held, token, session, _call(5, "hold-left"))
    await _reached_server(held, "tools/call hold-left 5")
    client.close()
    assert await _outcome(held, "hold-left") == (504, False)

    released = await mcp_post(held.deputy, token, server=SERVER, body=_call(6, "release"),
                              headers={**session, **JSON_ONLY})
    assert released.status_code == 200, released.text  # the late answer to 5 came first, and went nowhere
    again = await mcp_post(held.deputy, token, server=SERVER, body=_call(5, "after"), headers={**session, **JSON_ONLY})
    assert again.status_code == 200 and again.json() == {"jsonrpc": "2.0", "id": 5, "result": {}}, again.text


async def test_a_deleted_session_answers_the_request_a_duplicate_would_have_orphaned(held: Held) -> None:
    """The review's attack: the same id twice, then the session ended. The first request was no longer among those
    the end wakes, so it waited forever. Now the duplicate is refused, and the end answers the first: 502."""
    token, _ = await tokens_for_alice(held.deputy, held.deputy.resource(SERVER))
    session = await _session(held, token)
    first = asyncio.create_task(mcp_post(held.deputy, token, server=SERVER, body=_call(7, "hold-deleted"),
                                         headers={**session, **JSON_ONLY}))
    await _reached_server(held, "tools/call hold-deleted 7")
    _refused_as_in_progress(await mcp_post(held.deputy, token, server=SERVER, body=_call(7, "hold-deleted"),
                                           headers={**session, **JSON_ONLY}), 7)
    async with httpx.AsyncClient(timeout=30) as http:
        ended = await http.delete(held.deputy.resource(SERVER), headers={"Authorization": f"Bearer {token}",
                                                                          **session})
    assert ended.status_code == 200
    answered = await first
    assert answered.status_code == 502, answered.text
    assert answered.json()["id"] == 7 and answered.json()["error"]["message"] == "upstream server exited"


async def test_ids_a_javascript_server_cannot_tell_apart_are_one_request(held: Held) -> None:
    """2^53 + 1 and 2^53 are one number to a server that reads ids as doubles (Node): both open at once, the
    server could not tell their answers apart. So the second is refused while the first is open, and the first's
    answer, its id rounded by the server, still reaches it."""
    token, _ = await tokens_for_alice(held.deputy, held.deputy.resource(SERVER))
    session = await _session(held, token)
    big = 2**53 + 1
    first = asyncio.create_task(mcp_post(held.deputy, token, server=SERVER, body=_call(big, "hold-big"),
                                         headers={**session, **JSON_ONLY}))
    await _reached_server(held, f"tools/call hold-big {big}")
    _refused_as_in_progress(await mcp_post(held.deputy, token, server=SERVER, body=_call(2**53, "hold-big"),
                                           headers={**session, **JSON_ONLY}), 2**53)
    released = await mcp_post(held.deputy, token, server=SERVER, body=_call(8, "release"),
                              headers={**session, **JSON_ONLY})
    assert released.status_code == 200, released.text
    answered = await first
    assert answered.status_code == 200, answered.text
    assert answered.json()["result"]["content"][0]["text"] == "released"
    assert f"tools/call hold-big {2**53}" not in held.received()


async def test_a_stream_whose_client_does_not_read_is_cut_not_buffered(held: Held) -> None:
    """Review finding: a request's messages waited for its stream's reader without bound, so a chatty tool whose
    client did not read grew Deputy's memory without limit. Now past REQUEST_BACKLOG_BYTES waiting the request's
    stream is cut: what waited is dropped, the stream ends without the answer, and its record says incomplete."""
    token, _ = await tokens_for_alice(held.deputy, held.deputy.resource(SERVER))
    session = await _session(held, token)
    size = 64 * 1024
    count = 4 * REQUEST_BACKLOG_BYTES // size  # far more than the bound and every socket buffer on the way hold
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json",
               "Accept": "application/json, text/event-stream", **session}
    async with httpx.AsyncClient(timeout=60) as http, http.stream(
            "POST", held.deputy.resource(SERVER), headers=headers,
            json=_call(9, "chatty", {"count": count, "size": size}, progress="talk")) as stream:
        assert stream.status_code == 200
        await _reached_server(held, "tools/call chatty 9")
        # The server writes all of the chatty call's lines before it reads the next message, and Deputy routes a
        # process's lines in order: once this is answered, every line of the chatty call has been routed.
        after = await mcp_post(held.deputy, token, server=SERVER, body=_call(10, "after"),
                               headers={**session, **JSON_ONLY})
        assert after.status_code == 200, after.text
        events = [json.loads(line[len("data: "):]) async for line in stream.aiter_lines() if line.startswith("data: ")]
    assert events, "what was already on its way is delivered"
    assert len(events) < count and all(event.get("method") == "notifications/progress" for event in events), \
        "the stream is cut: neither every notification nor the answer"
    assert await _outcome(held, "chatty") == (200, False)
    assert "its stream is cut" in held.log()


async def test_every_get_stream_of_a_session_ends_with_it(held: Held) -> None:
    """Two GET streams on one session, then the session is ended: both streams end. Before, the end was one item
    of the queue the streams shared, so one of them took it and the other waited for ever on a session gone."""
    token, _ = await tokens_for_alice(held.deputy, held.deputy.resource(SERVER))
    session = await _session(held, token)
    headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream", **session}
    opened = [asyncio.Event(), asyncio.Event()]

    async def stream(ready: asyncio.Event) -> int:
        async with httpx.AsyncClient(timeout=30) as http, \
                http.stream("GET", held.deputy.resource(SERVER), headers=headers) as response:
            ready.set()
            await response.aread()  # to the stream's end
            return response.status_code

    streams = [asyncio.create_task(stream(ready)) for ready in opened]
    await asyncio.wait_for(asyncio.gather(*(ready.wait() for ready in opened)), 30)
    async with httpx.AsyncClient(timeout=30) as http:
        ended = await http.delete(held.deputy.resource(SERVER), headers={"Authorization": f"Bearer {token}",
                                                                          **session})
    assert ended.status_code == 200
    assert await asyncio.wait_for(asyncio.gather(*streams), 20) == [200, 200]
