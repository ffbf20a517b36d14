"""Upstream call places: a call that waits for one is never sent once its client has gone; one user cannot take
them all.

When one upstream server holds every call place it may have (``UPSTREAM_CALLS_PER_SERVER``), the next call waits
for one (at most ``CALL_WAIT``). Its client may give up first. Sent when a place frees, the call would run the tool
for nobody, and a client that retried would have it run twice. Against a real ``deputy serve`` and an upstream that
holds calls (tests.e2e.stream_upstream): the call that waited and lost its client never reaches the upstream, and
its ``call.outcome`` record says it was answered 503 and not read. And a user with ``limits.calls_per_user`` calls in
flight on a server is answered 429 for the next, before it is decided or recorded, while another user's calls pass.
"""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from deputy.gateway.upstream_pool import UPSTREAM_CALLS_PER_SERVER
from tests.e2e.stream_upstream import StreamUpstream, stream_upstream
from tests.support.audit_log import Leaf, read_log
from tests.support.databases import database_url
from tests.support.deputy_process import RunningDeputy, running_deputy
from tests.support.eventually import eventually
from tests.support.oauth_flow import tokens_for_alice

SERVER = """
[servers.streams]
url = "{url}"
scopes = ["streams:tools"]

[limits]
calls_per_user = {calls_per_user}
"""
BOB_PASSWORD = "bob's own battery staple"


def _call(name: str, request_id: int) -> dict[str, object]:
    return {"jsonrpc": "2.0", "id": request_id, "method": "tools/call", "params": {"name": name, "arguments": {}}}


def _headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream",
            "Content-Type": "application/json"}


async def _post(http: httpx.AsyncClient, deputy: RunningDeputy, token: str, name: str, request_id: int) -> int:
    response = await http.post(deputy.resource("streams"), json=_call(name, request_id), headers=_headers(token))
    return response.status_code


def _send_and_stay(deputy: RunningDeputy, token: str, name: str) -> socket.socket:
    """The call sent on a connection of its own, which the caller closes (the client giving up)."""
    parts = urlsplit(deputy.resource("streams"))
    assert parts.hostname is not None and parts.port is not None
    body = json.dumps(_call(name, 99)).encode()
    head = "".join(f"{key}: {value}\r\n" for key, value in _headers(token).items())
    sock = socket.create_connection((parts.hostname, parts.port), timeout=30)
    sock.sendall(f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n{head}Content-Length: {len(body)}\r\n\r\n"
                 .encode() + body)
    return sock


async def test_a_call_whose_client_left_while_it_waited_for_a_place_is_never_sent(tmp_path: Path) -> None:
    with (stream_upstream() as (url, upstream), database_url("sqlite", tmp_path) as db_url,
          running_deputy(tmp_path, db_url, url, SERVER.format(url=url, calls_per_user=UPSTREAM_CALLS_PER_SERVER + 1))
          as deputy):
        token, _ = await tokens_for_alice(deputy, deputy.resource("streams"), scope="streams:tools")
        upstream.holding = True
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=UPSTREAM_CALLS_PER_SERVER)) \
                as http:
            holding = [asyncio.create_task(_post(http, deputy, token, "hold", n))
                       for n in range(UPSTREAM_CALLS_PER_SERVER)]

            async def all_held() -> None:
                assert upstream.held == UPSTREAM_CALLS_PER_SERVER

            await eventually(all_held, within=60)
            late = _send_and_stay(deputy, token, "late")

            async def decided() -> str:  # recorded before it would go upstream: it is now waiting for a place
                return str(_one((await read_log(deputy.database_url)).decisions(tool="late"))["decision_id"])

            decision_id = await eventually(decided)
            late.close()

            async def answered_unread() -> None:
                outcomes = (await read_log(deputy.database_url)).outcomes_of(decision_id)
                assert [(o.record["status"], o.record["complete"]) for o in outcomes] == [(503, False)]

            await eventually(answered_unread)
            upstream.release()
            assert await asyncio.gather(*holding) == [200] * UPSTREAM_CALLS_PER_SERVER
            # Places go to waiting calls first come, first served: had the late call still been waiting, it would
            # have reached the upstream before this one.
            assert await _post(http, deputy, token, "after", 100) == 200
        _never_sent(upstream)
        assert "the client left while its call waited, the call not sent" in _log(deputy)


async def test_a_user_past_her_calls_in_flight_is_told_429_and_others_still_pass(tmp_path: Path) -> None:
    with (stream_upstream() as (url, upstream), database_url("sqlite", tmp_path) as db_url,
          running_deputy(tmp_path, db_url, url, SERVER.format(url=url, calls_per_user=3),
                         users=(("bob", BOB_PASSWORD),)) as deputy):
        resource = deputy.resource("streams")
        alice, _ = await tokens_for_alice(deputy, resource, scope="streams:tools")
        bob, _ = await tokens_for_alice(deputy, resource, scope="streams:tools", username="bob", password=BOB_PASSWORD)
        upstream.holding = True
        async with httpx.AsyncClient(timeout=60) as http:
            holding = [asyncio.create_task(_post(http, deputy, alice, "hold", n)) for n in range(3)]

            async def all_held() -> None:
                assert upstream.held == 3

            await eventually(all_held)
            refused = await http.post(resource, json=_call("fourth", 4), headers=_headers(alice))
            assert refused.status_code == 429, refused.text
            assert refused.headers["retry-after"]
            assert refused.json()["error"]["data"] == {"limit": "limits.calls_per_user", "value": 3}
            assert await _post(http, deputy, bob, "bobs", 5) == 200  # another user's call is not held up
            upstream.release()
            assert await asyncio.gather(*holding) == [200] * 3
            assert await _post(http, deputy, alice, "after", 6) == 200  # her places came back
        assert "fourth" not in upstream.called
        snapshot = await read_log(deputy.database_url)
        assert snapshot.decisions(tool="fourth") == []  # refused before anything was decided or recorded


def _one(leaves: list[Leaf]) -> dict[str, object]:
    assert len(leaves) == 1, leaves
    return dict(leaves[0].record)


def _never_sent(upstream: StreamUpstream) -> None:
    assert "after" in upstream.called and "late" not in upstream.called
    assert upstream.called.count("hold") == UPSTREAM_CALLS_PER_SERVER


def _log(deputy: RunningDeputy) -> str:
    return (deputy.data_dir.parent / "deputy.log").read_text(errors="replace")
