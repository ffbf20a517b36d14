"""One MCP session's stdio process: the messages written to it and the lines it writes back, routed.

MCP transports (2026-07-28, stdio): messages are newline-delimited JSON-RPC on the process's stdin and stdout,
and a process serves one client. :class:`StdioSession` writes each client message as one line and routes each
line the server writes: an answer to the :class:`Inbox` of the request it answers, a progress notification to the
request whose ``progressToken`` it carries, any other message sent while a request is open to that request's stream
(MCP Streamable HTTP: messages related to a request go on its stream), and what remains to the session's GET
streams (:class:`Unsolicited`: each message to one of them, at most :data:`UNSOLICITED_BACKLOG` messages and
:data:`UNSOLICITED_BACKLOG_BYTES` bytes waiting, past which a message is dropped with a warning; when the process
ends, every GET stream of the session is told, not one of them). A line nested deeper than
:data:`deputy.bounded_json.MAX_DEPTH`, or over the stream's limit, ends the session: no line can be routed past
it. stderr is drained whatever its lines (:mod:`deputy.gateway.stdio_stderr`); a spare's reader, running since
the process started, goes on (:mod:`deputy.gateway.stdio_spares`).

Open requests are keyed by their id as the server may read it (:func:`request_key`): a number by its value as a
double, since a JavaScript server reads ``1`` and ``1.0`` as one id and rounds an integer beyond 2^53, and hands
it back so. At most one request per key is open in a session: another is refused (:class:`RequestInProgress`)
before it is written, since the server could not tell the two answers apart and the first would wait for an answer
routed to the second. A request's routing ends with its answer; its reader also ends when the process exits or the
session is stopped (:attr:`Ending.EXITED`), so no request waits on a session that is gone.

A request's reader may fall behind (its client does not read its stream) while the server goes on writing for it.
What waits for the reader is bounded: at most :data:`REQUEST_BACKLOG` messages and :data:`REQUEST_BACKLOG_BYTES`
bytes before its answer (the answer itself always fits). Past either the request is cut (:attr:`Ending.CUT`):
what waited is dropped at once, nothing more is kept for it, and its stream ends without its answer, marked
incomplete for the call's record — never silently thinned, since a stream missing messages in its middle would
look complete; one warning names the server. The request stays open (its id taken, its messages dropped) until
its handler ends.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import time
from collections import deque
from typing import Any

from deputy import bounded_json
from deputy.gateway.jsonrpc import McpMessage
from deputy.gateway.stdio_spares import MAX_LINE, stop_process
from deputy.gateway.stdio_stderr import StderrRelay, drain_stderr

log = logging.getLogger("deputy.gateway.stdio_upstream")  # the name its warnings had before the split

UNSOLICITED_BACKLOG = 1000
UNSOLICITED_BACKLOG_BYTES = 4 * MAX_LINE  # else a thousand of the longest lines: 4 GiB for one session
# What may wait for one request's reader before its answer: plenty for a client that reads its stream (its reader
# keeps it near empty), and room for four of the longest lines a process may write.
REQUEST_BACKLOG = 1000
REQUEST_BACKLOG_BYTES = 4 * MAX_LINE


class Ending(enum.Enum):
    """Why a reader gets no more messages, short of a request's answer."""

    EXITED = "exited"  # the process exited, or the session was stopped
    CUT = "cut"  # the request's reader fell further behind than REQUEST_BACKLOG(_BYTES) allow


# A queued message from the server: the raw JSON line, and whether it ends the request; or why there are no more.
Item = tuple[bytes, bool] | Ending


class RequestInProgress(Exception):
    """A request whose id (:func:`request_key`) is that of a request already open in the session."""


def request_key(value: Any) -> str:
    """The key of a JSON-RPC id (or progress token), the same for every id a server may not tell apart.

    A number is keyed by its value as a double (JavaScript's only number): ``1`` and ``1.0`` are one id, and so are
    2^53 + 1 and 2^53. Another value (a string) is keyed by its JSON, which never reads as a number.
    """
    if type(value) is int or type(value) is float:
        try:
            return repr(float(value) + 0.0)  # + 0.0: -0.0 is 0
        except OverflowError:  # beyond every double: no client id (at most 64 bits) is keyed so
            return json.dumps(value)
    return json.dumps(value, sort_keys=True)


class Inbox:
    """The messages the server sent for one open request, waiting for its reader; bounded (module docstring)."""

    def __init__(self) -> None:
        self._items: asyncio.Queue[Item] = asyncio.Queue()  # bounded by put(), which keeps the count
        self._bytes = 0
        self.closed = False  # its answer or its ending is queued: nothing more is

    def put(self, line: bytes, final: bool) -> bool:
        """Queue ``line`` (``final``: the request's answer); False when it is not: the request had ended, or is
        cut now because too much waits."""
        if self.closed:
            return False
        if not final and (self._items.qsize() >= REQUEST_BACKLOG
                          or self._bytes + len(line) > REQUEST_BACKLOG_BYTES):
            while not self._items.empty():  # dropped now: the reader will not relay them, and the memory is freed
                self._items.get_nowait()
            self._bytes = 0
            self.end(Ending.CUT)
            return False
        self._items.put_nowait((line, final))
        self._bytes += len(line)
        self.closed = final
        return True

    def end(self, why: Ending) -> None:
        """No more messages for the reader, once it has those waiting; nothing if its answer is already queued."""
        if not self.closed:
            self.closed = True
            self._items.put_nowait(why)

    async def get(self) -> Item:
        item = await self._items.get()
        if isinstance(item, tuple):
            self._bytes -= len(item[0])
        return item


class Unsolicited:
    """The server's messages outside any request, waiting for the session's GET streams; bounded (module docstring).

    Each message goes to one reader (MCP Streamable HTTP: a message is sent on one stream only), while the end of the
    process reaches them all: a second GET stream would otherwise wait forever on a session that is gone."""

    def __init__(self) -> None:
        self._lines: deque[bytes] = deque()
        self._bytes = 0
        self.ended = False
        self._changed = asyncio.Event()

    def put(self, line: bytes) -> bool:
        """Queue ``line``; False when it is dropped: too much waits already, or the session has ended."""
        if self.ended or len(self._lines) >= UNSOLICITED_BACKLOG or \
                self._bytes + len(line) > UNSOLICITED_BACKLOG_BYTES:
            return False
        self._lines.append(line)
        self._bytes += len(line)
        self._wake()
        return True

    def end(self) -> None:
        """No more messages: every reader gets :attr:`Ending.EXITED` once those waiting are read."""
        self.ended = True
        self._wake()

    async def get(self) -> bytes | Ending:
        while not self._lines:
            if self.ended:
                return Ending.EXITED
            await self._changed.wait()  # each wake sets the event its waiters hold, then starts a new one
        line = self._lines.popleft()
        self._bytes -= len(line)
        return line

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()


class StdioSession:
    def __init__(self, session_id: str, server: str, process: asyncio.subprocess.Process,
                 user: str = "", agent: str = "", stderr: StderrRelay | None = None,
                 stderr_reader: asyncio.Task[None] | None = None) -> None:
        self.session_id = session_id
        self.server = server
        self.process = process
        self.stderr = stderr or StderrRelay(server)
        self.user = user  # who opened it, counted against their caps
        self.agent = agent
        self.pending: dict[str, Inbox] = {}
        self.progress: dict[str, str] = {}
        self.unsolicited = Unsolicited()
        self.last_used = time.monotonic()
        self.alive = True
        self._write_lock = asyncio.Lock()
        # A spare's stderr has been drained since it started: that reader goes on, never a second one.
        self._tasks = [asyncio.create_task(self._read_stdout()),
                       stderr_reader or asyncio.create_task(self._read_stderr())]

    @property
    def busy(self) -> bool:
        return bool(self.pending)

    async def write(self, body: bytes) -> None:
        """Send one message, as the client wrote it, on one line (MCP stdio: newline-delimited); raises
        ConnectionError when the process's stdin is closed (it exited)."""
        # A JSON text can hold a line break only as insignificant whitespace (never inside a string).
        line = body.replace(b"\r", b" ").replace(b"\n", b" ") + b"\n"
        assert self.process.stdin is not None  # started with stdin=PIPE
        async with self._write_lock:
            self.process.stdin.write(line)
            await self.process.stdin.drain()

    def open_request(self, message: McpMessage) -> Inbox:
        """The inbox of a request about to be written; raises :class:`RequestInProgress` when one with the same key
        is open (nothing is then changed). A session that has ended gives an inbox that has ended too."""
        key = request_key(message.id)
        if key in self.pending:
            raise RequestInProgress(key)
        inbox = Inbox()
        if not self.alive:
            inbox.end(Ending.EXITED)  # never routed to, never woken: it ends now
            return inbox
        self.pending[key] = inbox
        meta = message.params.get("_meta") if isinstance(message.params, dict) else None
        token = meta.get("progressToken") if isinstance(meta, dict) else None
        if token is not None:
            self.progress[request_key(token)] = key
        return inbox

    def close_request(self, message: McpMessage, inbox: Inbox) -> None:
        """Forget the request of ``inbox``; a later request that reuses its id (its own inbox) is left alone."""
        key = request_key(message.id)
        if self.pending.get(key) is inbox:
            self._forget(key)

    def _forget(self, key: str) -> None:
        self.pending.pop(key, None)
        self.progress = {t: k for t, k in self.progress.items() if k != key}

    def _route(self, line: bytes) -> None:
        try:
            message = bounded_json.loads(line)
        except bounded_json.TooDeep:
            raise  # the session ends (_read_stdout): no line can be routed past it
        except ValueError:
            log.warning("stdio server %s wrote a line that is not JSON; dropped", self.server)
            return
        if not isinstance(message, dict):
            return
        if "method" not in message and "id" in message:
            key = request_key(message["id"])
            inbox = self.pending.get(key)
            if inbox is not None:
                inbox.put(line, True)
                self._forget(key)  # answered: nothing more is routed to it, and its id may be used again
            return
        target: str | None = None
        if message.get("method") == "notifications/progress":
            token = (message.get("params") or {}).get("progressToken")
            target = self.progress.get(request_key(token))
        if target is None and self.pending:
            # A server request or notification sent while a request is open belongs to that request's stream.
            target = next(reversed(self.pending))
        if target is not None:
            inbox = self.pending[target]
            if not inbox.closed and not inbox.put(line, False):
                log.warning("stdio server %s: a request's reader fell behind by more than %d messages or %d bytes; "
                            "its stream is cut", self.server, REQUEST_BACKLOG, REQUEST_BACKLOG_BYTES)
        elif not self.unsolicited.put(line):
            log.warning("stdio server %s: no GET stream is reading (more than %d messages or %d bytes wait); "
                        "message dropped", self.server, UNSOLICITED_BACKLOG, UNSOLICITED_BACKLOG_BYTES)

    async def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        try:
            while line := await self.process.stdout.readline():
                if line.strip():
                    self._route(line.strip())
        except bounded_json.TooDeep as exc:
            log.warning("stdio server %s wrote a line nested deeper than %d levels; session ended", self.server,
                        exc.limit)
        except (ValueError, asyncio.LimitOverrunError):
            log.warning("stdio server %s wrote an over-long line; session ended", self.server)
        finally:
            self._end()

    def _end(self) -> None:
        """The session is over: every reader still waiting is told so (once; later requests end at once)."""
        if not self.alive:
            return
        self.alive = False
        for inbox in self.pending.values():
            inbox.end(Ending.EXITED)
        self.pending.clear()
        self.progress.clear()
        self.unsolicited.end()

    async def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        await drain_stderr(self.process.stderr, self.server, self.stderr)

    async def stop(self) -> None:
        # First: the readers are answered now, not once the process has gone (it may take STOP_GRACE, or hold
        # its stdout open past its own end).
        self._end()
        await stop_process(self.process)
        for task in self._tasks:
            task.cancel()
