"""The upstream killed mid-stream: the client's stream ends cleanly, Deputy lives and leaks nothing, the record says so.

A tool of the streaming upstream (`tests.fault.streaming_upstream`) answers as an SSE stream (MCP Streamable
HTTP), sends one progress event and then keeps the stream open. Once the client has that event through
Deputy, the upstream is SIGKILLed. The client must see the stream end cleanly (what was relayed kept, the
chunked body terminated) rather than hang or be aborted; Deputy must stay up, keep serving other calls, log
one warning naming the server and no traceback, and hold no connection to the dead upstream; and the call's
``call.outcome`` record must account for exactly the bytes the client got and say that the stream did not
complete. Twice: for a server without policies (the answer relayed as it is) and for one with policies (the
answer passes the SSE list filter, ``rewrite_sse``), each with its own upstream.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_audit_gateway import one
from tests.fault.harness import FaultyDeputy, deputy_tcp_peers, eventually_answered, faulty_deputy, marker, poll_until
from tests.fault.streaming_upstream import streaming_upstream
from tests.support.audit_log import read_log
from tests.support.oauth_flow import tokens_for_alice

STDIO = "dying-stdio"  # a stdio server that exits in the middle of an answer
DYING_STDIO = str(Path(__file__).with_name("dying_stdio_server.py"))
STREAMING = "streaming"  # no policies: the answer is relayed as it comes
FILTERED = "filtered"  # policies: the answer passes the SSE list filter on its way
FILTERED_POLICY = f"""
@id("filtered-stream")
permit (principal, action in [Deputy::Action::"stream", Deputy::Action::"echo"], resource)
when {{ context.scopes.contains("{FILTERED}:tools") }};
"""


@dataclass
class Upstream:
    process: subprocess.Popen[bytes]
    port: int


@dataclass
class StreamSetup:
    faulty: FaultyDeputy
    upstreams: dict[str, Upstream]


@pytest.fixture(scope="module")
def setup(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StreamSetup]:
    directory = tmp_path_factory.mktemp(f"fault-stream-{backend}")
    (directory / "policies").mkdir()
    (directory / "policies" / "filtered.cedar").write_text(FILTERED_POLICY)
    with ExitStack() as stack:
        upstreams: dict[str, Upstream] = {}
        extra = ""
        for name in (STREAMING, FILTERED):
            process, url = stack.enter_context(streaming_upstream())
            upstreams[name] = Upstream(process, int(url.rsplit(":", 1)[1].split("/", 1)[0]))
            extra += f'\n[servers.{name}]\nurl = "{url}"\nscopes = ["{name}:tools"]\n'
            if name == FILTERED:
                extra += f'policies = "{directory / "policies"}"\n'
        extra += (f'\n[servers.{STDIO}]\ncommand = ["{sys.executable}", "{DYING_STDIO}"]\n'
                  f'scopes = ["{STDIO}:tools"]\n')
        faulty = stack.enter_context(faulty_deputy(backend, directory, extra))
        yield StreamSetup(faulty, upstreams)


async def recorded_call(database_url: str, text: str) -> tuple[Any, dict[str, Any]]:
    """The allowing decision of the one `stream` call with this text, and its call.outcome record, once written."""

    async def outcome_recorded() -> bool:
        snapshot = await read_log(database_url)
        decisions = snapshot.decisions(tool="stream", arguments={"text": text}, outcome="allow")
        return len(decisions) == 1 and len(snapshot.outcomes_of(decisions[0].record["decision_id"])) == 1

    await poll_until(outcome_recorded, "the call.outcome record", 30)
    snapshot = await read_log(database_url)
    decision = one(snapshot.decisions(tool="stream", arguments={"text": text}, outcome="allow"), "decision")
    return decision, dict(one(snapshot.outcomes_of(decision.record["decision_id"]), "call.outcome").record)


@pytest.mark.parametrize("server", [STREAMING, FILTERED])
async def test_an_upstream_killed_mid_stream_ends_the_stream_and_is_recorded(setup: StreamSetup, server: str) -> None:
    faulty = setup.faulty
    deputy = faulty.deputy
    upstream = setup.upstreams[server]
    token, _ = await tokens_for_alice(deputy, deputy.resource(server))
    text = marker("stream")
    body = {"jsonrpc": "2.0", "id": 7, "method": "tools/call",
            "params": {"name": "stream", "arguments": {"text": text}, "_meta": {"progressToken": text}}}
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream",
               "Content-Type": "application/json", "MCP-Protocol-Version": "2025-06-18"}
    received = b""
    ended: str
    async with httpx.AsyncClient(timeout=60) as http, http.stream(
            "POST", deputy.resource(server), content=json.dumps(body), headers=headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        chunks = response.aiter_raw()
        while b"notifications/progress" not in received:
            received += await asyncio.wait_for(anext(chunks), 60)
        upstream.process.kill()
        upstream.process.wait(10)
        try:
            async with asyncio.timeout(60):  # the test's bound on a hang, not a timing assertion
                async for chunk in chunks:
                    received += chunk
            ended = "end of stream"
        except httpx.HTTPError as exc:  # named in the failure below (an aborted body: RemoteProtocolError)
            ended = type(exc).__name__

    assert faulty.alive()
    await eventually_answered(faulty, f"{text} after")  # other calls still served

    async def no_connection_to_the_dead_upstream() -> bool:
        return all(remote != upstream.port for _, remote in deputy_tcp_peers(faulty.pid))

    await poll_until(no_connection_to_the_dead_upstream, "Deputy to close its connection to the dead upstream", 30)

    decision, outcome = await recorded_call(deputy.database_url, text)
    print(f"\n{server} upstream killed mid-stream: client saw {ended} after {len(received)} bytes; outcome {outcome}")
    assert decision.record["policies"] == ([] if server == STREAMING else ["filtered-stream"])
    assert outcome["status"] == 200
    assert outcome["response_bytes"] == len(received), "the record accounts for exactly what the client got"
    assert ended == "end of stream", "the chunked body is terminated, not aborted"
    assert "Traceback" not in faulty.log_text(), faulty.log_text()[-3000:]
    assert f"upstream {server} stream broke" in faulty.log_text(), "one warning names the server"
    assert outcome.get("complete") is False, f"the outcome does not say the stream broke off: {outcome}"


async def test_a_stdio_server_that_exits_mid_answer_ends_the_stream_and_is_recorded_incomplete(
        setup: StreamSetup) -> None:
    faulty = setup.faulty
    deputy = faulty.deputy
    token, _ = await tokens_for_alice(deputy, deputy.resource(STDIO))
    text = marker("stdio-dies")
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream",
               "Content-Type": "application/json", "MCP-Protocol-Version": "2025-06-18"}
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                  "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                             "clientInfo": {"name": "fault", "version": "1"}}}
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call",
            "params": {"name": "stream", "arguments": {"text": text}, "_meta": {"progressToken": text}}}
    async with httpx.AsyncClient(timeout=60) as http:
        opened = await http.post(deputy.resource(STDIO), json=initialize,
                                 headers={**headers, "Accept": "application/json"})
        assert opened.status_code == 200, opened.text
        session = {"Mcp-Session-Id": opened.headers["mcp-session-id"]}
        answered = await http.post(deputy.resource(STDIO), json=call, headers={**headers, **session})
    assert answered.status_code == 200
    assert b"notifications/progress" in answered.content and b'"id":2' not in answered.content.replace(b" ", b"")
    assert faulty.alive()

    _decision, outcome = await recorded_call(deputy.database_url, text)
    assert outcome["response_bytes"] == len(answered.content)
    assert outcome.get("complete") is False, f"the outcome does not say the answer broke off: {outcome}"
    assert "Traceback" not in faulty.log_text(), faulty.log_text()[-3000:]
