"""The shared connection pools to HTTP upstreams, and the places a request takes in them.

Two aiohttp client sessions serve every HTTP upstream (:mod:`deputy.gateway.http_upstream`), one for calls (POST,
DELETE) and one for GET streams, each with its own connections, so long-lived streams never hold a place a call
needs. The places are counted here (:class:`~deputy.gateway.stream_caps.Slots`), not only by aiohttp's connector
limits, where a request would queue without a bound:

- a GET stream finding its pool full is answered 503 at once (another stream is not expected to end soon);
- a call waits at most :data:`CALL_WAIT` seconds, and one upstream server's calls hold at most half of the calls'
  pool (:data:`UPSTREAM_CALLS_PER_SERVER`: one that hangs cannot take the others' places); past either, 503;
- a call whose client goes away while it waits is never sent
  (:data:`~deputy.gateway.responses.CLIENT_LEFT`): nobody would read its answer, and a client that retries would
  have its tool run twice. The client is watched only while the call waits, never on the hot path of a call that
  finds its places free.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Literal

import aiohttp
from starlette.types import Receive

from deputy.gateway.responses import Waited, unless_client_leaves
from deputy.gateway.stream_caps import Slots
from deputy.outbound_http import open_session

# Pooled connections to HTTP upstreams for calls (POST, DELETE): at most this many at once, at most half of them to
# one upstream server (one that hangs cannot take the others' places), and a call waits at most CALL_WAIT seconds for
# a place before it is answered 503. GET streams have their own pool (``limits.upstream_streams``).
UPSTREAM_CALLS = 256
UPSTREAM_CALLS_PER_SERVER = UPSTREAM_CALLS // 2
CALL_WAIT = 10.0


Place = Callable[[], None] | None | Literal[Waited.CLIENT_LEFT]


class UpstreamPool:
    """The shared client sessions, one for calls and one for GET streams, each with its own connections, so that
    long-lived streams never hold a place a call needs; created inside the running event loop, closed at shutdown.

    The places are counted here (:class:`Slots`), not only by aiohttp's connector limits: a request that finds
    no place is answered 503 at once (a stream) or after ``CALL_WAIT`` (a call), where aiohttp would queue it
    without a bound. The connectors' limits stay as a backstop (``connect`` bounds any wait left in them)."""

    def __init__(self, streams: int = 256, calls: int = UPSTREAM_CALLS, call_wait: float = CALL_WAIT) -> None:
        self.stream_slots = Slots(streams)
        self.call_slots = Slots(calls)
        self.call_wait = call_wait
        self._sessions: dict[bool, aiohttp.ClientSession] = {}

    def session_for(self, stream: bool) -> aiohttp.ClientSession:
        session = self._sessions.get(stream)
        if session is None:
            size = self.stream_slots.size if stream else self.call_slots.size
            session = self._sessions[stream] = open_session(
                # No read timeout: an SSE stream may stay quiet for long; a client going away ends it.
                aiohttp.ClientTimeout(total=None, connect=self.call_wait + 10, sock_connect=10),
                connector=aiohttp.TCPConnector(limit=size, keepalive_timeout=60, ttl_dns_cache=60),
                # The client's own headers are relayed; none is made up for it.
                skip_auto_headers=("User-Agent", "Accept-Encoding", "Content-Type"),
            )
        return session

    @property
    def session(self) -> aiohttp.ClientSession:
        return self.session_for(stream=False)

    async def admit(self, server_calls: Slots, stream: bool, receive: Receive) -> Place:
        """A place for one request (its release to call once answered); None: the pool is full; CLIENT_LEFT: the
        client went away while the call waited for a place, so it must not be sent (nobody would read the answer,
        and a client that retries would have its tool run twice)."""
        if stream:
            return self.stream_slots.give_back if await self.stream_slots.take(None) else None
        if not (server_calls.full or self.call_slots.full):
            return await self._call_place(server_calls)  # both free: taken at once, no client to watch
        # A place granted in the same moment the client left goes back as the wait is cancelled (asyncio.Semaphore
        # re-releases a grant its cancelled waiter never used; _call_place gives the server's place back).
        return await unless_client_leaves(self._call_place(server_calls), receive)

    async def _call_place(self, server_calls: Slots) -> Callable[[], None] | None:
        deadline = asyncio.get_running_loop().time() + self.call_wait
        if not await server_calls.take(deadline):
            return None
        try:
            taken = await self.call_slots.take(deadline)
        except BaseException:  # cancelled while waiting: the server's place is given back all the same
            server_calls.give_back()
            raise
        if not taken:
            server_calls.give_back()
            return None

        def give_back() -> None:
            self.call_slots.give_back()
            server_calls.give_back()
        return give_back

    async def close(self) -> None:
        sessions, self._sessions = self._sessions, {}
        for session in sessions.values():
            await session.close()
