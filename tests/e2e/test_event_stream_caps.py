"""MCP GET streams cannot starve calls (a benchmark finding): per-principal and per-session caps, a stream pool of
their own, places given back however a stream ends.

A Deputy with small limits (``upstream_streams = 3``, ``streams_per_principal = 3``, ``streams_per_session = 2``)
in front of an upstream that counts the streams it holds (tests.e2e.stream_upstream). Alice and bob are two
principals of the same server. Timeouts here only guard against a hang; nothing is timed.
"""

from __future__ import annotations

import contextlib
import json
import signal
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.e2e.stream_upstream import StreamUpstream, stream_upstream
from tests.support.databases import database_url
from tests.support.deputy_process import CONFIDENTIAL_CLIENT, CONFIDENTIAL_SECRET, RunningDeputy, running_deputy
from tests.support.eventually import eventually
from tests.support.oauth_flow import mcp_post, tokens_for_alice

BOB_PASSWORD = "bob's own battery staple"
LIMITS = """
[servers.streams]
url = "{url}"
scopes = ["streams:tools"]

[limits]
upstream_streams = 3
streams_per_user = 3
streams_per_principal = 3
streams_per_session = 2
"""
CALL = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "anything", "arguments": {}}}


@dataclass
class Setup:
    deputy: RunningDeputy
    upstream: StreamUpstream
    alice: str
    bob: str
    alice_other_client: str  # the same user through another client: another principal


@contextlib.contextmanager
def _deputy(directory: Path) -> Iterator[tuple[RunningDeputy, StreamUpstream]]:
    with (stream_upstream() as (url, upstream), database_url("sqlite", directory) as db_url,
          running_deputy(directory, db_url, url, LIMITS.format(url=url), users=(("bob", BOB_PASSWORD),)) as deputy):
        yield deputy, upstream


@pytest.fixture(scope="module")
async def setup(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Setup]:
    with _deputy(tmp_path_factory.mktemp("stream-caps")) as (deputy, upstream):
        resource = deputy.resource("streams")
        alice, _ = await tokens_for_alice(deputy, resource, scope="streams:tools")
        bob, _ = await tokens_for_alice(deputy, resource, scope="streams:tools", username="bob",
                                        password=BOB_PASSWORD)
        other, _ = await tokens_for_alice(deputy, resource, scope="streams:tools", client_id=CONFIDENTIAL_CLIENT,
                                          basic=(CONFIDENTIAL_CLIENT, CONFIDENTIAL_SECRET))
        yield Setup(deputy, upstream, alice, bob, other)


class Streams:
    """GET streams opened through Deputy, each kept open until closed (or the block ends)."""

    def __init__(self, deputy: RunningDeputy, stack: contextlib.AsyncExitStack) -> None:
        self.deputy = deputy
        self.stack = stack
        self.http = httpx.AsyncClient(timeout=30)
        # Each open stream's reader, kept: an abandoned one is closed when collected, and its connection with it.
        self.readers: list[AsyncIterator[bytes]] = []
        stack.push_async_callback(self.http.aclose)

    async def open(self, token: str, session: str | None = None, query: str = "") -> httpx.Response:
        """The stream's response: 200 (its first bytes read, so the upstream holds it) or a refusal, read whole."""
        headers = {"Authorization": f"Bearer {token}", "Accept": "text/event-stream"}
        if session is not None:
            headers["Mcp-Session-Id"] = session
        request = self.http.build_request("GET", self.deputy.resource("streams") + query, headers=headers)
        response = await self.http.send(request, stream=True)
        self.stack.push_async_callback(response.aclose)
        if response.status_code == 200:
            reader = response.aiter_raw()
            self.readers.append(reader)
            first = await anext(reader)
            assert first.startswith(b": open"), first
        else:
            await response.aread()
        return response


async def call(setup: Setup, token: str) -> httpx.Response:
    return await mcp_post(setup.deputy, token, server="streams", body=CALL)


async def upstream_holds(setup: Setup, count: int) -> None:
    async def check() -> None:
        assert setup.upstream.open_streams == count
    await eventually(check)


def refused_by(response: httpx.Response, status: int, setting: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["retry-after"].isdigit()
    error = response.json()["error"]
    if setting:
        assert error["data"] == {"limit": setting, "value": 3}, error
    assert "try again later" in error["message"]


async def test_streams_past_a_cap_are_refused_and_calls_still_pass(setup: Setup) -> None:
    """Alice fills her cap, which is also the whole stream pool: her next stream 429, bob's stream 503 (the pool
    is full, not his fault), and calls, hers and bob's, are answered all the same (their own pool)."""
    async with contextlib.AsyncExitStack() as stack:
        streams = Streams(setup.deputy, stack)
        for _ in range(3):
            assert (await streams.open(setup.alice)).status_code == 200
        await upstream_holds(setup, 3)
        refused_by(await streams.open(setup.alice), 429, "limits.streams_per_principal")
        refused_by(await streams.open(setup.bob), 503, "")
        for token in (setup.bob, setup.alice):
            answered = await call(setup, token)
            assert answered.status_code == 200, answered.text
            assert answered.json()["result"]["content"][0]["text"] == "answered"
    await upstream_holds(setup, 0)


async def test_one_user_through_another_client_shares_her_cap(setup: Setup) -> None:
    """Each client of alice's is a principal of its own, but her streams on a server count together
    (``streams_per_user``): two streams through one client and one through another fill her share; a fourth, through
    either, is 429 naming that limit."""
    async with contextlib.AsyncExitStack() as stack:
        streams = Streams(setup.deputy, stack)
        for token in (setup.alice, setup.alice, setup.alice_other_client):
            assert (await streams.open(token)).status_code == 200
        await upstream_holds(setup, 3)
        refused_by(await streams.open(setup.alice_other_client), 429, "limits.streams_per_user")
    await upstream_holds(setup, 0)


async def test_a_stream_gives_its_places_back_however_it_ends(setup: Setup) -> None:
    """The client leaving closes the upstream connection and frees its places (principal's and pool's); a stream
    the upstream ends frees them too: no place leaks, so the cap can be filled again and again."""
    async with contextlib.AsyncExitStack() as stack:
        streams = Streams(setup.deputy, stack)
        opened = [await streams.open(setup.alice) for _ in range(3)]
        await upstream_holds(setup, 3)
        await opened[0].aclose()  # the client goes away: Deputy closes its upstream connection
        await upstream_holds(setup, 2)
        assert (await streams.open(setup.alice)).status_code == 200
        for response in opened[1:]:
            await response.aclose()
        await upstream_holds(setup, 1)
        for _ in range(4):  # more than the cap, one after the other: each ended by the upstream
            ended = await streams.open(setup.bob, query="?end=1")
            assert ended.status_code == 200
            assert b"".join([chunk async for chunk in streams.readers[-1]]).strip() == b""  # it ended
        assert (await streams.open(setup.bob)).status_code == 200
        assert (await streams.open(setup.bob)).status_code == 200
    await upstream_holds(setup, 0)


async def test_one_session_holds_at_most_its_share(setup: Setup) -> None:
    """``streams_per_session`` (2) below the principal's cap (3): a third stream on one session is refused, one on
    another session of the same principal is not."""
    initialized = [await mcp_post(setup.deputy, setup.alice, server="streams") for _ in range(2)]
    first, second = (response.headers["mcp-session-id"] for response in initialized)
    async with contextlib.AsyncExitStack() as stack:
        streams = Streams(setup.deputy, stack)
        for _ in range(2):
            assert (await streams.open(setup.alice, first)).status_code == 200
        refused = await streams.open(setup.alice, first)
        assert refused.status_code == 429, refused.text
        assert json.loads(refused.text)["error"]["data"] == {"limit": "limits.streams_per_session", "value": 2}
        assert (await streams.open(setup.alice, second)).status_code == 200


async def test_shutdown_ends_the_streams_and_their_upstream_connections(tmp_path: Path) -> None:
    """Deputy stopped while streams are open: the clients' streams end cleanly (each a whole chunked body, so the
    client knows to open it again), the upstream connections are closed, and the process exits without waiting out
    uvicorn's graceful period (which used to end in cutting them, with an ERROR line)."""
    with _deputy(tmp_path) as (deputy, upstream):
        token, _ = await tokens_for_alice(deputy, deputy.resource("streams"), scope="streams:tools")
        async with contextlib.AsyncExitStack() as stack:
            streams = Streams(deputy, stack)
            for _ in range(2):
                assert (await streams.open(token)).status_code == 200
            assert deputy.process is not None
            deputy.process.terminate()
            for reader in streams.readers:
                async for _ in reader:  # ends, and cleanly: a stream cut off raises httpx.RemoteProtocolError
                    pass
            # Its own SIGTERM handling, not killed.
            assert deputy.process.wait(30) in (0, -signal.SIGTERM)

            async def closed() -> None:
                assert upstream.open_streams == 0
            await eventually(closed)
        log = (tmp_path / "deputy.log").read_text()
        assert "graceful shutdown exceeded" not in log, log[-2000:]
