"""The HTTP listener's guard: how long a connection may take to speak, and how many may be open at once.

A peer that opens a connection and sends nothing, or half a request line, holds a socket and a file
descriptor for free. Left alone, tens of thousands of them exhaust the descriptors, and the
process can no longer accept a connection, open its database or reach an upstream. The guard
bounds both the time and the count, so load is shed instead of taking the process down:

- **header deadline** — a connection must send complete request headers within ``[limits]
  header_timeout`` of opening, and of the first byte of each later request; otherwise it is
  closed (RFC 9112 §9.5: a server may close a connection at any time; one that had begun a
  request is told 408 Request Timeout first, RFC 9110 §15.5.9);
- **header size** — the request line and headers may take ``MAX_HEADER_BYTES`` (64 KiB); past it the
  connection is told 431 (RFC 6585 §5) and closed, so neither uvicorn nor the parser buffers more;
- **keep-alive idle** — between requests a connection may wait ``[limits] idle_timeout``
  (uvicorn's keep-alive timer, RFC 9112 §9.3 persistence);
- **connection count** — at most ``max_connections`` are open; a new connection past it closes the
  oldest connection that has not yet sent a whole request — headers and body: a body trickled in
  holds a connection as surely as silence, for up to ``[limits] body_timeout`` — (an attacker's
  stockpile of silent or dribbling sockets) *of the peer address holding the most such
  connections* (an IPv6 peer by its /64, :func:`deputy.rate_limit.address_key`), then the oldest
  idle keep-alive one, and only if every other connection is serving a request the newcomer
  itself. Choosing by address first keeps a flood from one or a few addresses from cutting
  another peer's connection in the moment between its accept and its request being read, which a
  flood refilling faster than that moment otherwise does (behind a reverse proxy every peer is the
  proxy, and this is plain oldest-first). A request received whole and in flight — including a
  long-lived event stream — is never cut for room;
- **descriptor budget** — at start the soft ``RLIMIT_NOFILE`` is raised to the hard limit, and
  ``max_connections`` is kept below it with room for the accept backlog, the database, upstream
  connections and stdio server processes (:func:`listener_budget`). Should the descriptors run
  out anyway, libuv (under uvloop) accepts and drops the pending connections and keeps listening.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from deputy.limits import LimitSettings
from deputy.rate_limit import address_key

log = logging.getLogger(__name__)

MIN_CONNECTIONS = 16
MAX_BACKLOG = 2048
# Descriptors a Deputy holds besides client connections: database pool (10 + 10 overflow), upstream
# HTTP pool (100), key and log files, the event loop's own; each stdio session holds three pipes and a pidfd.
BASE_RESERVE = 256
FILES_PER_STDIO_SESSION = 4
# RLIMIT_NOFILE's hard limit can be "unlimited" (macOS); the kernel still caps the soft one.
UNLIMITED_FILES_TARGETS = (1_048_576, 10_240)
LAST_LOOK = 0.01  # seconds past the header deadline before it is judged: one more read of the socket (_last_look)
CUT_LOG_INTERVAL = 60.0  # seconds between two warnings that connections are being cut for room
REQUEST_TIMEOUT_RESPONSE = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
# The request line and headers together; llhttp and httptools buffer both without a bound of their own.
MAX_HEADER_BYTES = 64 * 1024
HEADERS_TOO_LARGE_RESPONSE = (b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n"
                              b"connection: close\r\n\r\n")


@dataclass(frozen=True, slots=True)
class OpenFiles:
    """The soft descriptor limit before and after :func:`raise_open_files_limit`, and the hard one."""

    before: int
    now: int
    hard: int | None  # None: unlimited


def raise_open_files_limit() -> OpenFiles:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard limit, as far as the system allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    hard_or_none = None if hard == resource.RLIM_INFINITY else hard
    if soft == resource.RLIM_INFINITY:
        return OpenFiles(before=UNLIMITED_FILES_TARGETS[0], now=UNLIMITED_FILES_TARGETS[0], hard=hard_or_none)
    now = soft
    for target in (hard,) if hard_or_none is not None else UNLIMITED_FILES_TARGETS:
        if soft >= target:
            break
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            continue  # the kernel's own cap is lower: try the next, or keep what we have
        now = target
        break
    return OpenFiles(before=soft, now=now, hard=hard_or_none)


@dataclass(frozen=True, slots=True)
class ListenerBudget:
    """How many connections one listener may hold, and how many may wait in its accept queue."""

    max_connections: int
    backlog: int

    def share(self, fraction: float) -> ListenerBudget:
        """A part of this budget, for a second listener in the same process (the demo upstream)."""
        return ListenerBudget(max(MIN_CONNECTIONS, int(self.max_connections * fraction)), self.backlog)


def listener_budget(limits: LimitSettings, open_files: int, stdio_servers: int = 0) -> ListenerBudget:
    """``max_connections`` as configured, lowered so that the process keeps descriptors for its other work.

    One accept burst (up to the backlog) is taken before the guard can cut anything, so the backlog
    is part of the room kept.
    """
    backlog = max(MIN_CONNECTIONS, min(MAX_BACKLOG, open_files // 16))
    reserve = backlog + min(BASE_RESERVE, open_files // 4)
    reserve += FILES_PER_STDIO_SESSION * limits.stdio_sessions_per_server * stdio_servers
    return ListenerBudget(max(MIN_CONNECTIONS, min(limits.max_connections, open_files - reserve)), backlog)


class Cuttable(Protocol):
    def cut(self) -> None: ...


class ConnectionGuard:
    """The open connections of one listener, by state, each state in arrival order.

    *Waiting*: no complete request (headers and body) yet since the connection opened, also grouped
    by peer address, with the addresses bucketed by how many they hold so the heaviest is found at
    once. *Idle*: between requests of a keep-alive connection (a later request's headers and body
    still arriving leave it idle). *Serving*: a request is in whole and its response is not complete.
    Plain dicts keep insertion order, so the oldest is the first key.
    """

    def __init__(self, max_connections: int) -> None:
        self.max_connections = max_connections
        self._waiting: dict[Cuttable, str] = {}  # connection: its peer's address key
        self._waiting_by_address: dict[str, dict[Cuttable, None]] = {}
        self._addresses_holding: dict[int, dict[str, None]] = {}  # n: the addresses with n waiting connections
        self._most_held = 0
        self._idle: dict[Cuttable, None] = {}
        self._serving: set[Cuttable] = set()
        self.cut_for_room = 0
        self._last_warning = -CUT_LOG_INTERVAL

    @property
    def open(self) -> int:
        return len(self._waiting) + len(self._idle) + len(self._serving)

    def admit(self, connection: Cuttable, address: str) -> None:
        """Count a new connection from `address` (an address key); past the limit, cut the connection that
        is least likely real work."""
        self._waiting[connection] = address
        held = self._waiting_by_address.setdefault(address, {})
        held[connection] = None
        self._move_address(address, len(held) - 1, len(held))
        while self.open > self.max_connections:
            victim = self._victim(connection)
            self.release(victim)
            self.cut_for_room += 1
            victim.cut()
        if self.cut_for_room and time.monotonic() - self._last_warning >= CUT_LOG_INTERVAL:
            self._last_warning = time.monotonic()
            log.warning("%d connections open (the limit): closing the oldest that sent no request, from the "
                        "address holding the most (%d closed so far)", self.open, self.cut_for_room)

    def _victim(self, newcomer: Cuttable) -> Cuttable:
        # Only when every address holds one silent connection can the heaviest's oldest be the newcomer
        # itself, and then the next address in that bucket is taken.
        for address in self._addresses_holding.get(self._most_held, ()):
            oldest = next(iter(self._waiting_by_address[address]))
            if oldest is not newcomer:
                return oldest
        if self._idle:
            return next(iter(self._idle))
        return newcomer  # every other connection is serving a request: those are never cut for room

    def serving(self, connection: Cuttable) -> None:
        if self._forget(connection):
            self._serving.add(connection)

    def idle(self, connection: Cuttable) -> None:
        if self._forget(connection):
            self._idle[connection] = None

    def release(self, connection: Cuttable) -> None:
        self._forget(connection)

    def _forget(self, connection: Cuttable) -> bool:
        """Remove from whichever state holds it; False if the guard no longer counts it (cut or closed)."""
        address = self._waiting.pop(connection, None)
        if address is not None:
            held = self._waiting_by_address[address]
            del held[connection]
            if not held:
                del self._waiting_by_address[address]
            self._move_address(address, len(held) + 1, len(held))
            return True
        if connection in self._idle:
            del self._idle[connection]
            return True
        if connection in self._serving:
            self._serving.discard(connection)
            return True
        return False

    def _move_address(self, address: str, before: int, after: int) -> None:
        """`address` now holds `after` waiting connections instead of `before` (one more or one fewer)."""
        if before:
            bucket = self._addresses_holding[before]
            del bucket[address]
            if not bucket:
                del self._addresses_holding[before]
                if self._most_held == before:
                    self._most_held = after
        if after:
            self._addresses_holding.setdefault(after, {})[address] = None
            self._most_held = max(self._most_held, after)


class GuardedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with a header deadline and the listener's :class:`ConnectionGuard`."""

    guard: ClassVar[ConnectionGuard]
    header_timeout: ClassVar[float]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_deadline: asyncio.TimerHandle | None = None  # armed while the connection owes request headers
        self._request_begun = False
        self._header_bytes = 0  # received since the deadline was armed: the headers owed, and what came with them

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self._arm_header_deadline()
        self.guard.admit(self, address_key(self.client[0] if self.client else None))

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_header_deadline()
        self.guard.release(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        # Bytes between requests (even bare CRLFs, which start no message) stop uvicorn's keep-alive timer;
        # the header deadline takes over so that dribbling bytes cannot hold the connection open.
        if self._header_deadline is None and (self.cycle is None or self.cycle.response_complete):
            self._arm_header_deadline()
        owed = self._header_deadline is not None
        if owed:
            self._header_bytes += len(data)
        super().data_received(data)
        # Checked after parsing: a chunk that completes the headers may carry a body too, and that is allowed.
        # So at most MAX_HEADER_BYTES plus one read is ever held for an incomplete header block.
        if (owed and self._header_deadline is not None and self._header_bytes > MAX_HEADER_BYTES
                and not self.transport.is_closing()):
            self._disarm_header_deadline()
            self.guard.release(self)
            self.transport.write(HEADERS_TOO_LARGE_RESPONSE)
            self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._request_begun = True

    def on_headers_complete(self) -> None:
        self._disarm_header_deadline()
        self._request_begun = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        # Serving only once the body is in too (it may be cut for room until then), and not when the answer went
        # out before the body ended (a 413): the connection is idle then.
        if self.cycle is not None and not self.cycle.response_complete:
            self.guard.serving(self)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
            self.guard.idle(self)

    def _unsupported_upgrade_warning(self) -> None:
        # Deputy speaks no WebSocket (uvicorn runs with ws="none"): an Upgrade header is ignored and the
        # request answered as plain HTTP. uvicorn would log two warnings per such request, free log spam.
        return

    def cut(self) -> None:
        """Close at once: the connection holds nothing anyone is waiting for."""
        self._disarm_header_deadline()
        if not self.transport.is_closing():
            self.transport.abort()

    def _arm_header_deadline(self) -> None:
        self._header_bytes = 0
        self._header_deadline = self.loop.call_later(self.header_timeout, self._last_look)

    def _last_look(self) -> None:
        # Judged only after one more read of the socket: a loop running late (a flood of connections, a starved
        # process) reaches this timer before it has read headers that arrived in time, and that lateness is
        # Deputy's, not the peer's. The loop polls its sockets before its next timers run.
        self._header_deadline = self.loop.call_later(LAST_LOOK, self._header_deadline_passed)

    def _disarm_header_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _header_deadline_passed(self) -> None:
        self._header_deadline = None
        self.guard.release(self)
        if self.transport.is_closing():
            return
        if self._request_begun:
            self.transport.write(REQUEST_TIMEOUT_RESPONSE)
        self.transport.close()


def guarded_http_protocol(limits: LimitSettings, budget: ListenerBudget) -> type[GuardedHttpProtocol]:
    """A protocol class for one listener (uvicorn ``Config(http=...)``), with a guard of its own."""
    namespace = {"guard": ConnectionGuard(budget.max_connections), "header_timeout": limits.header_timeout}
    return type("ListenerHttpProtocol", (GuardedHttpProtocol,), namespace)
