"""Upstream MCP servers that speak stdio, offered to clients as Streamable HTTP.

MCP transports (2026-07-28): a stdio server reads newline-delimited JSON-RPC on
stdin and writes it on stdout, and serves one client. So Deputy starts one
process per MCP session: ``initialize`` without a session starts a process and
mints the session id; later requests carry it. Each client request is answered
with an SSE stream carrying whatever the server sends while it works
(progress, logging, elicitation and sampling requests) and ends with the
response (its result rewritten when the exchange asks for it,
:mod:`deputy.gateway.response_rewrite`); messages unrelated to any open request
go to the session's GET stream. A request whose id is that of a request still open in its session (as the server
would read the id, :func:`deputy.gateway.stdio_session.request_key`) is refused at once, 400 with a JSON-RPC error,
and never written to the process. A request answered as JSON stops waiting as soon as its client leaves: the
call's record says 504, not read (the server's answer, should it come, goes to no one). A request whose client
does not read its stream while the server goes on writing for it is cut past a bound (its stream ends without
the answer, marked incomplete; :mod:`deputy.gateway.stdio_session`). Every answer of a server with policies — a
request's stream, its JSON answer, the GET stream — passes the same list filter as over HTTP. A line nested deeper than
:data:`deputy.bounded_json.MAX_DEPTH` cannot be routed and ends the session, like an over-long one; stderr is
drained whatever its lines (:mod:`deputy.gateway.stdio_stderr`). Credentials come from the
environment configured for the server, never from the client. Deputy supervises the processes: a
process that exits ends its session (the client gets 404 and re-initializes), sessions idle for
``[limits] stdio_idle_timeout`` are stopped, and sessions are capped per server, per user and per
client (``stdio_sessions_per_server|user|client``, :mod:`deputy.limits`): one user or one agent
cannot take every process. Past a user's or a client's cap ``initialize`` is answered 429, past the
server's 503, both with ``Retry-After`` and a JSON-RPC error naming the limit. A process that cannot be
started (its command missing or not executable) is answered 502 with a JSON-RPC error naming the server, one
warning in the log and ``deputy_upstream_errors{kind="process"}``.

A new session takes one of the server's spare processes when there is one (``servers.NAME.spare_processes``,
:mod:`deputy.gateway.stdio_spares`): started ahead, never spoken to, counted within
``stdio_sessions_per_server``; otherwise it starts its own. Every session id starts with
:func:`deputy.worker_identity.stdio_session_prefix`, so with ``serve --workers N`` a request for the session
can be sent to the worker whose child the process is.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator

from deputy.config import UpstreamServer
from deputy.gateway.exchange import Exchange
from deputy.gateway.jsonrpc import Kind
from deputy.gateway.principal import Principal
from deputy.gateway.response_rewrite import rewrite_json_body, rewrite_sse
from deputy.gateway.responses import (
    CLIENT_LEFT,
    JSONRPC_INTERNAL_ERROR,
    JSONRPC_INVALID_REQUEST,
    end_body,
    jsonrpc_error,
    relay_until_disconnect,
    send_json,
    unless_client_leaves,
)
from deputy.gateway.stdio_session import Ending, Inbox, RequestInProgress, StdioSession, Unsolicited
from deputy.gateway.stdio_spares import NotStarted, SparePool, spawn
from deputy.gateway.stdio_stderr import StderrRelay
from deputy.limits import LimitSettings
from deputy.telemetry.metrics import Metrics
from deputy.worker_identity import stdio_session_prefix

log = logging.getLogger(__name__)

REAP_EVERY = 30.0  # seconds between sweeps for idle sessions (at most; less for a short idle timeout)
SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-store")]


class SessionCapReached(Exception):
    """No new session: ``setting`` (``limits.stdio_sessions_per_…``) is reached; 429 for a user's or a
    client's own cap, 503 for the server's."""

    def __init__(self, setting: str, cap: int, status: int, whose: str) -> None:
        super().__init__(f"{setting} = {cap} reached")
        self.setting = setting
        self.cap = cap
        self.status = status
        self.whose = whose


class StdioUpstream:
    def __init__(self, server: UpstreamServer, limits: LimitSettings | None = None,
                 metrics: Metrics | None = None) -> None:
        assert server.command is not None  # config validation guarantees command for stdio upstreams
        self.server = server
        self.limits = limits or LimitSettings()
        self.metrics = metrics
        self.stderr = StderrRelay(server.name)  # one line budget for all the server's processes
        self.sessions: dict[str, StdioSession] = {}
        self._reaper: asyncio.Task[None] | None = None
        self._starting = asyncio.Lock()  # counting and starting is one step: concurrent starts cannot overshoot
        self.reap_every = min(REAP_EVERY, self.limits.stdio_idle_timeout / 2)
        self.spares = SparePool(server, self.stderr, self._starting, self._free_places)
        self._spares_started = False

    def start(self) -> None:
        """Start the spare processes in the background; it returns at once. Called once the server's first
        request is answered: a server no one uses costs no process, and the first session's own process does not
        compete with a spare's start (both slow) on the way to its first answer."""
        self._spares_started = True
        self.spares.start()

    def _free_places(self) -> int:
        return self.limits.stdio_sessions_per_server - len(self.sessions)

    async def close(self) -> None:
        await self.spares.close()  # first: none is started again for the room the sessions below leave
        if self._reaper is not None:
            self._reaper.cancel()
        await asyncio.gather(*(s.stop() for s in self.sessions.values()), return_exceptions=True)
        self.sessions.clear()

    async def forward(self, exchange: Exchange) -> None:
        try:
            await self._forward(exchange)
        finally:  # spares start once the first request is answered, so its process started alone (is ready)
            if not self._spares_started:
                self.start()

    async def _forward(self, exchange: Exchange) -> None:
        session = self.sessions.get(exchange.session) if exchange.session is not None else None
        if exchange.session is not None and (session is None or not session.alive):
            if self.sessions.pop(exchange.session, None) is not None:
                self.spares.refill()
            await send_json(exchange.send, 404, jsonrpc_error(JSONRPC_INVALID_REQUEST, "session not found"))
            return
        if session is not None:
            session.last_used = time.monotonic()
        if exchange.method == "POST":
            await self._post(exchange, session)
        elif session is None:
            await send_json(exchange.send, 400, jsonrpc_error(JSONRPC_INVALID_REQUEST, "Mcp-Session-Id required"))
        elif exchange.method == "GET":
            await exchange.send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS})
            events = _unsolicited(session.unsolicited)
            if exchange.rewrite_result is not None:
                events = rewrite_sse(events, None, exchange.rewrite_result, answers_list=False)
            await relay_until_disconnect(events, exchange.receive, exchange.send, exchange.stream_ends)
            await exchange.send({"type": "http.response.body", "body": b"", "more_body": False})
        else:  # DELETE
            self.sessions.pop(session.session_id, None)
            self.spares.refill()  # its place may hold a spare again
            await session.stop()
            await exchange.send({"type": "http.response.start", "status": 200, "headers": []})
            await exchange.send({"type": "http.response.body", "body": b""})

    async def _post(self, exchange: Exchange, session: StdioSession | None) -> None:
        send = exchange.send
        # The gateway parsed the body strictly (deputy.gateway.jsonrpc) before handing it over.
        message = exchange.message
        if message is None:
            await send_json(send, 400, jsonrpc_error(JSONRPC_INVALID_REQUEST, "expected one JSON-RPC 2.0 message"))
            return
        headers: list[tuple[bytes, bytes]] = []
        if session is None:
            if message.method != "initialize":
                await send_json(send, 400, jsonrpc_error(JSONRPC_INVALID_REQUEST, "Mcp-Session-Id required"))
                return
            try:
                session = await self._start_session(exchange.principal)
            except SessionCapReached as cap:
                log.warning("stdio server %s: %s for %s", self.server.name, cap, cap.whose)
                retry_after = str(math.ceil(self.reap_every)).encode()
                await send_json(send, cap.status, jsonrpc_error(
                    JSONRPC_INTERNAL_ERROR, f"too many stdio sessions ({cap.setting} = {cap.cap}); end one "
                    "(DELETE) or try again later", {"limit": cap.setting, "value": cap.cap}, request_id=message.id),
                    [(b"retry-after", retry_after)])
                return
            except NotStarted as failed:
                log.warning("upstream %s could not be started: %s", self.server.name, failed,
                            extra={"server": self.server.name})
                if self.metrics is not None:
                    self.metrics.upstream_errors.labels(self.server.name, "process").inc()
                # The client learns that the server is down, not the operator's command line.
                await send_json(send, 502, jsonrpc_error(
                    JSONRPC_INTERNAL_ERROR, f"upstream {self.server.name} could not be started",
                    request_id=message.id))
                return
            headers.append((b"mcp-session-id", exchange.bind_session(session.session_id).encode()))
        if message.kind is not Kind.REQUEST:
            # A notification, or the client's answer to a server request: nothing comes back.
            if await self._write(exchange, session):
                await send({"type": "http.response.start", "status": 202, "headers": headers})
                await send({"type": "http.response.body", "body": b""})
            return
        try:
            inbox = session.open_request(message)
        except RequestInProgress:
            # Both written, the server could not tell their answers apart (nor would Deputy): one would wait forever.
            await send_json(send, 400, jsonrpc_error(
                JSONRPC_INVALID_REQUEST, "a request with this id is already in progress in this session",
                request_id=message.id), headers)
            return
        try:
            if not await self._write(exchange, session):
                return
            accept = exchange.header(b"accept") or b""
            if b"text/event-stream" in accept or b"application/json" not in accept:
                await send({"type": "http.response.start", "status": 200, "headers": SSE_HEADERS + headers})
                answer = _Answer(inbox)
                events = answer.events()
                if exchange.rewrite_result is not None:
                    events = rewrite_sse(events, message.id, exchange.rewrite_result,
                                         answers_list=exchange.answers_list)
                await relay_until_disconnect(events, exchange.receive, send)
                # Incomplete when the process exited (or the client left) before the final message was relayed.
                await end_body(send, complete=answer.finished)
            else:
                await self._answer_json(exchange, inbox, headers)
        finally:
            session.close_request(message, inbox)

    async def _write(self, exchange: Exchange, session: StdioSession) -> bool:
        """Write the request's body to the process; False: it had exited (the client is answered 502)."""
        try:
            await session.write(exchange.body)
        except ConnectionError:  # its stdin closed under the write (BrokenPipeError, ConnectionResetError)
            await send_json(exchange.send, 502, jsonrpc_error(JSONRPC_INTERNAL_ERROR, "upstream server exited",
                                                              request_id=exchange.request_id))
            return False
        return True

    async def _answer_json(self, exchange: Exchange, inbox: Inbox, headers: list[tuple[bytes, bytes]]) -> None:
        line = await unless_client_leaves(_final(inbox), exchange.receive)
        if line is CLIENT_LEFT:
            # Nobody would read an answer: stop waiting now (it may never come) rather than hold the request, its
            # body and its call's record until it does. 504: no answer came from the server while the client waited.
            log.info("stdio server %s: the client left before the answer; stopped waiting", self.server.name)
            await send_json(exchange.send, 504, jsonrpc_error(
                JSONRPC_INTERNAL_ERROR, "the client left before the upstream server answered",
                request_id=exchange.request_id), unread=True)
            return
        if isinstance(line, Ending):
            reason = ("upstream server exited" if line is Ending.EXITED
                      else "upstream server sent more than Deputy holds before its answer")
            await send_json(exchange.send, 502, jsonrpc_error(JSONRPC_INTERNAL_ERROR, reason,
                                                              request_id=exchange.request_id))
            return
        if exchange.rewrite_result is not None:
            line = await rewrite_json_body(line, exchange.request_id, exchange.rewrite_result,
                                           answers_list=exchange.answers_list)
        await exchange.send({"type": "http.response.start", "status": 200,
                             "headers": [(b"content-type", b"application/json"), *headers]})
        await exchange.send({"type": "http.response.body", "body": line})

    async def _start_session(self, principal: Principal) -> StdioSession:
        """A new session (and process) for ``principal``; raises :class:`SessionCapReached` past a cap."""
        async with self._starting:
            self._reap()
            self._check_caps(principal)
            session_id = stdio_session_prefix() + secrets.token_urlsafe(24)
            spare = self.spares.take()  # started ahead and never spoken to; else a process of its own, now
            process = spare.process if spare is not None else await spawn(self.server)
            session = StdioSession(session_id, self.server.name, process, principal.user, principal.agent,
                                   self.stderr, spare.stderr if spare is not None else None)
            self.sessions[session.session_id] = session
        if self._reaper is None:
            self._reaper = asyncio.create_task(self._reap_forever())
        return session

    def _check_caps(self, principal: Principal) -> None:
        limits = self.limits
        # A principal's own caps first: a user at their cap is told so even when the server is full too.
        if sum(s.user == principal.user for s in self.sessions.values()) >= limits.stdio_sessions_per_user:
            raise SessionCapReached("limits.stdio_sessions_per_user", limits.stdio_sessions_per_user, 429,
                                    f"user {principal.user}")
        if sum(s.agent == principal.agent for s in self.sessions.values()) >= limits.stdio_sessions_per_client:
            raise SessionCapReached("limits.stdio_sessions_per_client", limits.stdio_sessions_per_client, 429,
                                    f"client {principal.agent}")
        if len(self.sessions) >= limits.stdio_sessions_per_server:
            raise SessionCapReached("limits.stdio_sessions_per_server", limits.stdio_sessions_per_server, 503,
                                    "everyone")

    def _reap(self) -> None:
        cutoff = time.monotonic() - self.limits.stdio_idle_timeout
        for session in list(self.sessions.values()):
            if not session.alive or (session.last_used < cutoff and not session.busy):
                self.sessions.pop(session.session_id, None)
                asyncio.create_task(session.stop())  # noqa: RUF006 - stop() ends on its own
                self.spares.refill()

    async def _reap_forever(self) -> None:
        while True:
            await asyncio.sleep(self.reap_every)
            self._reap()


class _Answer:
    """The events of one request's answer; ``finished`` once its final message has been relayed."""

    def __init__(self, inbox: Inbox) -> None:
        self.inbox = inbox
        self.finished = False

    async def events(self) -> AsyncIterator[bytes]:
        # An Ending: the process exited mid-answer, or the request was cut (its reader too far behind).
        while isinstance(item := await self.inbox.get(), tuple):
            line, final = item
            yield _event(line)
            if final:
                self.finished = True
                return


async def _final(inbox: Inbox) -> bytes | Ending:
    """The request's answer, the messages before it passed over (a JSON answer holds one message); or why none."""
    while isinstance(item := await inbox.get(), tuple):
        line, final = item
        if final:
            return line
    return item


def _event(line: bytes) -> bytes:
    return b"event: message\ndata: " + line + b"\n\n"


async def _unsolicited(backlog: Unsolicited) -> AsyncIterator[bytes]:
    """The server's messages outside any request (a GET stream), until the process exits."""
    while isinstance(line := await backlog.get(), bytes):
        yield _event(line)
