"""``deputy serve`` with two workers (``DEPUTY_WORKERS=2``): one port, one database, one audit log, and stdio
sessions that work whichever worker a connection reaches (deputy.gateway.worker_routing)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.workers_support import (
    CALL,
    fresh_post,
    fresh_posts,
    raw_request,
    read_answer,
    sse_messages,
    wait_accepted,
    wait_for_workers,
    worker_pid,
    worker_socket,
)
from tests.support.audit_log import log_verifier, read_log, verify_log
from tests.support.databases import database_url
from tests.support.demo_policies import DEMO_POLICIES
from tests.support.deputy_process import PUBLIC_CLIENT, RunningDeputy, running_deputy
from tests.support.eventually import eventually
from tests.support.oauth_flow import INITIALIZE, tokens_for_alice
from tests.support.sdk_client import free_port

BOB_PASSWORD = "bob's own long passphrase"


def _metrics_port() -> int:
    """A free port whose next one is free too: worker i serves /metrics on the configured port + i."""
    for _ in range(50):
        port = free_port()
        if port < 65535:
            import socket

            with socket.socket() as probe:
                try:
                    probe.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port
    raise AssertionError("no two consecutive free ports")


@pytest.fixture(scope="module")
def metrics_port() -> int:
    """Chosen when the module's Deputy starts, not at collection: minutes later, the suite's own connections may
    have taken a port that was free then."""
    return _metrics_port()


@pytest.fixture(scope="module")
def deputy(upstream_url: str, metrics_port: int, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDeputy]:
    directory: Path = tmp_path_factory.mktemp("deputy-workers")
    extra = f'''
[servers.guarded]
url = "{upstream_url}"
scopes = ["demo:tools", "demo:admin"]
policies = "{DEMO_POLICIES}"

[metrics]
listen = "127.0.0.1:{metrics_port}"
'''
    with database_url("sqlite", directory) as url, running_deputy(
            directory, url, upstream_url, extra, environment={"DEPUTY_WORKERS": "2"},
            users=(("bob", BOB_PASSWORD),)) as running:
        wait_for_workers(running, 2)
        yield running


def _port(deputy: RunningDeputy) -> int:
    return int(deputy.url.rsplit(":", 1)[1])


async def _tool_calls_per_worker(metrics_port: int, *labels: str) -> list[float]:
    """Each worker's count of tools/call requests (with ``labels`` too), from its own /metrics."""
    counts = []
    async with httpx.AsyncClient(timeout=30) as http:
        for index in range(2):
            text = (await http.get(f"http://127.0.0.1:{metrics_port + index}/metrics")).text
            counts.append(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                              if line.startswith("deputy_requests_total{") and 'method="tools/call"' in line
                              and all(label in line for label in labels)))
    return counts


async def test_both_workers_answer_and_append_to_one_audit_log(deputy: RunningDeputy, metrics_port: int) -> None:
    wait_for_workers(deputy, 2)
    token, _ = await tokens_for_alice(deputy, deputy.resource("demo"))
    opened = await fresh_post(deputy, token, INITIALIZE)
    assert opened.status_code == 200, opened.text
    session = opened.headers["mcp-session-id"]
    before = await _tool_calls_per_worker(metrics_port)
    made = 0
    for _ in range(10):  # batches of concurrent calls, each on its own connection, until both workers have served
        answers = await fresh_posts(deputy, token, [{**CALL, "id": 100 + i} for i in range(16)], session=session)
        made += len(answers)
        for answer in answers:
            assert answer.status_code == 200, answer.text
            assert sse_messages(answer.text)[-1]["result"]["structuredContent"] == {"result": 7}
        after = await _tool_calls_per_worker(metrics_port)
        if all(a > b for a, b in zip(after, before, strict=True)):
            break
    else:
        raise AssertionError(f"one worker served every call: {before} -> {after}")
    assert sum(after) - sum(before) == made, "each call counted once, by the worker that served it"

    snapshot = await read_log(deputy.database_url)
    verify_log(snapshot, log_verifier(deputy.data_dir))  # contiguous leaves from 0, nodes and checkpoints right
    decisions = snapshot.decisions(tool="add", outcome="allow")
    assert len(decisions) >= made

    async def verified() -> None:
        # Each worker signs a checkpoint of its appends within [audit] checkpoint_interval_ms: until then the last
        # records are not covered yet, which `audit verify` reports.
        done = await asyncio.to_thread(deputy.cli, "audit", "verify")
        assert done.returncode == 0, done.stdout + done.stderr

    await eventually(verified)


async def test_a_revocation_on_one_worker_is_seen_by_every_worker(deputy: RunningDeputy) -> None:
    wait_for_workers(deputy, 2)
    token, _ = await tokens_for_alice(deputy, deputy.resource("demo"))
    assert (await fresh_post(deputy, token, INITIALIZE)).status_code == 200
    async with httpx.AsyncClient(timeout=30, headers={"Connection": "close"}) as http:
        revoked = await http.post(f"{deputy.url}/revoke", data={"token": token, "client_id": PUBLIC_CLIENT})
    assert revoked.status_code == 200

    async def refused_everywhere() -> None:
        answers = await fresh_posts(deputy, token, [INITIALIZE] * 12)
        assert [a.status_code for a in answers] == [401] * 12

    await eventually(refused_everywhere)


def _deletion(user_id: int) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "delete_user", "arguments": {"id": user_id, "reason": "left"}}}


async def _delete_user(deputy: RunningDeputy, token: str, user_id: int, session: str) -> dict[str, Any]:
    return _answer(await fresh_post(deputy, token, _deletion(user_id), server="guarded", session=session))


def _answer(answer: httpx.Response) -> dict[str, Any]:
    assert answer.status_code == 200, answer.text
    if answer.headers["content-type"].startswith("text/event-stream"):  # the upstream's answer
        return sse_messages(answer.text)[-1]
    body: dict[str, Any] = answer.json()  # Deputy's own (held)
    return body


async def test_an_approval_is_one_for_every_worker(deputy: RunningDeputy, metrics_port: int) -> None:
    wait_for_workers(deputy, 2)
    token, _ = await tokens_for_alice(deputy, deputy.resource("guarded"))
    opened = await fresh_post(deputy, token, INITIALIZE, server="guarded")
    assert opened.status_code == 200, opened.text
    session = opened.headers["mcp-session-id"]
    held = (await _delete_user(deputy, token, 4242, session))["error"]["data"]["approval_id"]
    before = await _tool_calls_per_worker(metrics_port, 'server="guarded"', 'outcome="held"')
    for _ in range(10):  # retries on connections of their own until both workers have held the call
        retries = [_answer(retry) for retry in
                   await fresh_posts(deputy, token, [_deletion(4242)] * 8, server="guarded", session=session)]
        assert {retry["error"]["data"]["approval_id"] for retry in retries} == {held}, "one approval, not one each"
        after = await _tool_calls_per_worker(metrics_port, 'server="guarded"', 'outcome="held"')
        if all(a > b for a, b in zip(after, before, strict=True)):
            break
    else:
        raise AssertionError(f"one worker held every retry: {before} -> {after}")

    # Approved calls, each made on a connection of its own, until both workers have let one through.
    before = await _tool_calls_per_worker(metrics_port, 'server="guarded"', 'outcome="forwarded"')
    for user_id in range(5000, 5012):
        approval = (await _delete_user(deputy, token, user_id, session))["error"]["data"]["approval_id"]
        decided = deputy.cli("approvals", "approve", approval, "--as", "bob")
        assert decided.returncode == 0, decided.stderr
        proceeded = await _delete_user(deputy, token, user_id, session)
        assert "result" in proceeded, proceeded
        again = await _delete_user(deputy, token, user_id, session)
        assert again["error"]["data"]["approval_id"] != approval, "used once, by whichever worker: held again"
        after = await _tool_calls_per_worker(metrics_port, 'server="guarded"', 'outcome="forwarded"')
        if all(a > b for a, b in zip(after, before, strict=True)):
            break
    else:
        raise AssertionError(f"one worker forwarded every approved call: {before} -> {after}")


# stdio sessions: a request reaching the worker that does not hold the session's process


async def _stdio_session(deputy: RunningDeputy, token: str) -> tuple[str, int]:
    opened = await fresh_post(deputy, token, INITIALIZE, server="local")
    assert opened.status_code == 200, opened.text
    session = opened.headers["mcp-session-id"]
    assert session[:3] in ("w0-", "w1-"), session
    initialized = await fresh_post(deputy, token, {"jsonrpc": "2.0", "method": "notifications/initialized"},
                                   server="local", session=session)
    assert initialized.status_code == 202
    return session, int(session[1])


def _through_the_other_worker(deputy: RunningDeputy, owner: int, method: str, headers: dict[str, str],
                              body: bytes = b"", declared: int | None = None) -> tuple[int, str]:
    """Send a request while the owner is stopped (SIGSTOP), so that the other worker accepts its connection;
    once it has, let the owner go on and read the answer."""
    pid = worker_pid(deputy, owner)
    os.kill(pid, signal.SIGSTOP)
    try:
        sock = raw_request(_port(deputy), method, "/mcp/local", headers, body, declared)
        wait_accepted(_port(deputy))
    finally:
        os.kill(pid, signal.SIGCONT)
    return read_answer(sock)


def _headers(token: str, session: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Mcp-Session-Id": session, "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream"}


async def test_a_stdio_session_is_served_by_its_worker_whichever_worker_is_reached(deputy: RunningDeputy) -> None:
    wait_for_workers(deputy, 2)
    token, _ = await tokens_for_alice(deputy, deputy.resource("local"))
    session, owner = await _stdio_session(deputy, token)

    status, text = await asyncio.to_thread(_through_the_other_worker, deputy, owner, "POST",
                                           _headers(token, session), json.dumps(CALL).encode())
    assert status == 200, text
    assert sse_messages(text)[-1]["result"]["structuredContent"] == {"result": 7}, "an SSE answer, relayed"

    as_json = {**_headers(token, session), "Accept": "application/json"}
    status, text = await asyncio.to_thread(_through_the_other_worker, deputy, owner, "POST", as_json,
                                           json.dumps({**CALL, "id": 3}).encode())
    assert status == 200 and json.loads(text)["id"] == 3, text

    status, text = await asyncio.to_thread(_through_the_other_worker, deputy, owner, "DELETE",
                                           _headers(token, session))
    assert status == 200, text
    gone = await fresh_post(deputy, token, CALL, server="local", session=session)
    assert gone.status_code == 404, "the owner ended the session: unknown on every worker"


async def test_a_get_stream_is_opened_at_the_owner_through_the_other_worker(deputy: RunningDeputy) -> None:
    wait_for_workers(deputy, 2)
    token, _ = await tokens_for_alice(deputy, deputy.resource("local"))
    session, owner = await _stdio_session(deputy, token)
    pid = worker_pid(deputy, owner)
    os.kill(pid, signal.SIGSTOP)
    try:
        sock = raw_request(_port(deputy), "GET", "/mcp/local",
                           {**_headers(token, session), "Accept": "text/event-stream"})
        wait_accepted(_port(deputy))
    finally:
        os.kill(pid, signal.SIGCONT)
    with sock:
        head = b""
        while b"\r\n\r\n" not in head:  # the stream stays open: only its head is read, then it is left
            chunk = sock.recv(4096)
            assert chunk, head
            head += chunk
    assert head.startswith(b"HTTP/1.1 200"), head
    assert b"content-type: text/event-stream" in head.lower()
    still = await fresh_post(deputy, token, CALL, server="local", session=session)
    assert still.status_code == 200, "the session outlives the stream that was left"


async def test_session_ids_cannot_be_moved_nor_borrowed(deputy: RunningDeputy) -> None:
    wait_for_workers(deputy, 2)
    token, _ = await tokens_for_alice(deputy, deputy.resource("local"))
    bob, _ = await tokens_for_alice(deputy, deputy.resource("local"), username="bob", password=BOB_PASSWORD)
    session, owner = await _stdio_session(deputy, token)
    rest = session[3:]
    for forged in (f"w{1 - owner}-{rest}", f"w99-{rest}", f"w{owner}-x{rest}"):
        answer = await fresh_post(deputy, token, CALL, server="local", session=forged)
        assert answer.status_code == 404, f"{forged[:6]}…: {answer.status_code} {answer.text}"
    # Bob's token with Alice's session, passed to the owner: the owner's tag check refuses it.
    status, text = await asyncio.to_thread(_through_the_other_worker, deputy, owner, "POST",
                                           _headers(bob, session), json.dumps(CALL).encode())
    assert status == 404, text
    still = await fresh_post(deputy, token, CALL, server="local", session=session)
    assert still.status_code == 200, "Alice's session is untouched"


async def test_a_request_on_a_private_socket_is_never_passed_on(deputy: RunningDeputy) -> None:
    wait_for_workers(deputy, 2)
    token, _ = await tokens_for_alice(deputy, deputy.resource("local"))
    session, owner = await _stdio_session(deputy, token)
    transport = httpx.AsyncHTTPTransport(uds=str(worker_socket(deputy, 1 - owner)))
    async with httpx.AsyncClient(transport=transport, timeout=30) as http:
        answer = await http.post(deputy.resource("local"), content=json.dumps(CALL), headers=_headers(token, session))
    assert answer.status_code == 404, "served where it arrived: that worker holds no such session"


async def test_a_body_past_the_cap_is_refused_before_it_is_passed_on(deputy: RunningDeputy) -> None:
    wait_for_workers(deputy, 2)
    token, _ = await tokens_for_alice(deputy, deputy.resource("local"))
    session, owner = await _stdio_session(deputy, token)
    # Declared far past the cap (4 MiB) and never sent: refused unread by the worker that took the connection.
    status, text = await asyncio.to_thread(_through_the_other_worker, deputy, owner, "POST",
                                           _headers(token, session), b"", 9 * 1024 * 1024)
    assert status == 413, text
    assert "too large" in text


async def test_an_owner_that_is_gone_is_answered_503(deputy: RunningDeputy) -> None:
    assert deputy.process is not None
    wait_for_workers(deputy, 2)
    token, _ = await tokens_for_alice(deputy, deputy.resource("local"))
    session, owner = await _stdio_session(deputy, token)
    owner_pid = worker_pid(deputy, owner)
    os.kill(deputy.process.pid, signal.SIGSTOP)  # the supervisor does not restart the owner meanwhile
    try:
        os.kill(owner_pid, signal.SIGKILL)
        await asyncio.to_thread(_wait_gone, owner_pid)
        answer = await fresh_post(deputy, token, CALL, server="local", session=session)
    finally:
        os.kill(deputy.process.pid, signal.SIGCONT)
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"]["code"] == -32603 and answer.headers["retry-after"]
    await asyncio.to_thread(wait_for_workers, deputy, 2, other_than={owner_pid})
    again = await fresh_post(deputy, token, CALL, server="local", session=session)
    assert again.status_code == 404, "its successor does not know the session: the client starts a new one"


def _wait_gone(pid: int) -> None:
    """Until ``pid`` is a zombie or gone (its parent is stopped, so it is not reaped)."""
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return
        if state in ("Z", "X"):
            return
        time.sleep(0.05)
    raise AssertionError(f"worker {pid} still runs")
