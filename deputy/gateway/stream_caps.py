"""Caps on what MCP GET streams and calls may hold, and on how long a request waits for an upstream connection.

A GET on ``/mcp/NAME`` (MCP Streamable HTTP, "Listening for Messages from the Server") opens a Server-Sent
Events stream that may stay open for hours, holding a Deputy connection and, for an HTTP upstream, a pooled
upstream connection. Without bounds one authenticated client could open enough of them to take every pooled
connection and leave every other client's calls waiting (attack classes: "Per-principal quotas"). So:

- :class:`StreamCaps`: GET streams open at once per user on a server, whatever her clients (``limits.
  streams_per_user``: one person registering client after client still holds a bounded share of the stream pool),
  per principal (user, client, server; ``limits.streams_per_principal``) and per session
  (``limits.streams_per_session``). Past any of them the stream is
  refused with 429 (RFC 6585 §4: the client itself sent too many; it frees a place by closing one of its own) and
  a JSON-RPC error naming the limit. The place is given back whichever way the stream ends: the client leaves,
  the upstream ends it, the request is cancelled (shutdown).
- :class:`CallCaps`: calls (POST, DELETE) in flight at once per user on a server, whatever her clients
  (``limits.calls_per_user``), counted from before the call is decided until its answer ends. A server's calls share
  at most half of the upstream call pool (:class:`deputy.gateway.http_upstream.UpstreamPool`); without this one user
  sending calls to a slow tool (or one that waits on her) could hold all of that share and leave everyone else's
  calls 503. Past it: 429, as for streams, before anything is decided, recorded or used up (an approval).
- :class:`Slots`: places in one of the upstream pools (:class:`deputy.gateway.http_upstream.UpstreamPool`). Streams
  and calls have pools of their own, so streams can never starve calls; a stream finding its pool full is
  refused at once (another stream is not expected to end soon), a call waits a bounded time. Either is then
  answered 503 with ``Retry-After`` (RFC 9110 §15.6.4: the gateway is overloaded, nothing the client did).
"""

from __future__ import annotations

import asyncio
import functools
from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TypeVar

from starlette.types import Send

from deputy.gateway.principal import Principal
from deputy.gateway.responses import JSONRPC_INTERNAL_ERROR, RETRY_AFTER, jsonrpc_error, send_json
from deputy.limits import LimitSettings


@dataclass(frozen=True, slots=True)
class CapReached:
    """No new stream: ``setting`` (its value ``cap``) is reached; ``status`` 429 (the client's own) or 503."""

    setting: str
    cap: int
    status: int

    async def answer(self, send: Send, message: str) -> None:
        await send_json(send, self.status, jsonrpc_error(
            JSONRPC_INTERNAL_ERROR, f"{message} ({self.setting} = {self.cap}); try again later",
            {"limit": self.setting, "value": self.cap}), [(b"retry-after", RETRY_AFTER)])


PrincipalKey = tuple[str, str, str]  # server, user, client
K = TypeVar("K", bound=Hashable)


class StreamHold:
    """One open stream's places; :meth:`release` gives them back (once, however often it is called)."""

    __slots__ = ("_caps", "_principal_key", "_session")

    def __init__(self, caps: StreamCaps, principal_key: PrincipalKey, session: str | None) -> None:
        self._caps: StreamCaps | None = caps
        self._principal_key = principal_key
        self._session = session

    def release(self) -> None:
        caps, self._caps = self._caps, None
        if caps is not None:
            caps._give_back(self._principal_key, self._session)


class StreamCaps:
    """GET streams open at once, counted per user (on a server), per principal and per session, in this process."""

    def __init__(self, *, per_user: int, per_principal: int, per_session: int) -> None:
        self.per_user = per_user
        self.per_principal = per_principal
        self.per_session = per_session
        self._by_user: Counter[tuple[str, str]] = Counter()
        self._by_principal: Counter[PrincipalKey] = Counter()
        self._by_session: Counter[str] = Counter()
        self.ending = asyncio.Event()  # set by end_all: every GET stream ends cleanly (Exchange.stream_ends)

    def end_all(self) -> None:
        """Deputy is shutting down: end every open GET stream now, and any opened from here on at once, rather than
        hold the shutdown up until uvicorn cuts them (its graceful period, an ERROR line each)."""
        self.ending.set()

    @classmethod
    def from_limits(cls, limits: LimitSettings) -> StreamCaps:
        return cls(per_user=limits.streams_per_user, per_principal=limits.streams_per_principal,
                   per_session=limits.streams_per_session)

    def take(self, principal: Principal, session: str | None) -> StreamHold | CapReached:
        key = (principal.server, principal.user, principal.agent)
        if self._by_principal[key] >= self.per_principal:
            return CapReached("limits.streams_per_principal", self.per_principal, 429)
        if self._by_user[key[:2]] >= self.per_user:
            return CapReached("limits.streams_per_user", self.per_user, 429)
        if session is not None and self._by_session[session] >= self.per_session:
            return CapReached("limits.streams_per_session", self.per_session, 429)
        self._by_user[key[:2]] += 1
        self._by_principal[key] += 1
        if session is not None:
            self._by_session[session] += 1
        return StreamHold(self, key, session)

    def open_streams(self) -> int:
        return sum(self._by_principal.values())

    def _give_back(self, key: PrincipalKey, session: str | None) -> None:
        _less(self._by_user, key[:2])
        _less(self._by_principal, key)
        if session is not None:
            _less(self._by_session, session)


class CallCaps:
    """Calls in flight at once per user on a server, in this process."""

    def __init__(self, per_user: int) -> None:
        self.per_user = per_user
        self._by_user: Counter[tuple[str, str]] = Counter()

    def take(self, principal: Principal) -> Callable[[], None] | CapReached:
        """The call's place (the function that gives it back, to call once when its answer has ended), or why not."""
        key = (principal.server, principal.user)
        if self._by_user[key] >= self.per_user:
            return CapReached("limits.calls_per_user", self.per_user, 429)
        self._by_user[key] += 1
        return functools.partial(_less, self._by_user, key)


def _less(counts: Counter[K], key: K) -> None:
    # Entries at zero are deleted: a user, principal or session that has gone costs nothing.
    counts[key] -= 1
    if counts[key] <= 0:
        del counts[key]


class Slots:
    """At most ``size`` holders at once; :meth:`take` waits until ``deadline`` (a loop time; None: not at all)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._free = asyncio.Semaphore(size)

    async def take(self, deadline: float | None) -> bool:
        if not self.full:
            return await self._free.acquire()  # free: returns at once, no timer armed on the hot path
        if deadline is None:
            return False
        try:
            async with asyncio.timeout_at(deadline):
                return await self._free.acquire()
        except TimeoutError:
            return False

    @property
    def full(self) -> bool:
        return self._free.locked()

    def give_back(self) -> None:
        self._free.release()
