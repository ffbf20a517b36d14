"""One MCP session's stdio process: the messages written to it and the lines it writes back, routed.

MCP transports (2026-07-28, stdio): messages are newline-delimited JSON-RPC on the process's stdin and stdout,
and a process serves one client. :class:`StdioSession` writes each client message as one line and routes each
line the server writes: an answer to the queue of the request it answers, a progress notification to the request
whose ``progressToken`` it carries, any other message sent while a request is open to that request's stream
(MCP Streamable HTTP: messages related to a request go on its stream), and what remains to the session's GET
stream (at most :data:`UNSOLICITED_BACKLOG` waiting). A line nested deeper than
:data:`deputy.bounded_json.MAX_DEPTH`, or over the stream's limit, ends the session: no line can be routed past
it. stderr is drained whatever its lines (:mod:`deputy.gateway.stdio_stderr`); a spare's reader, running since
the process started, goes on (:mod:`deputy.gateway.stdio_spares`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from deputy import bounded_json
from deputy.gateway.jsonrpc import McpMessage
from deputy.gateway.stdio_spares import stop_process
from deputy.gateway.stdio_stderr import StderrRelay, drain_stderr

log = logging.getLogger("deputy.gateway.stdio_upstream")  # the name its warnings had before the split

UNSOLICITED_BACKLOG = 1000

# A queued message from the server: the raw JSON line, and whether it ends the request.
Item = tuple[bytes, bool] | None


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


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
        self.pending: dict[str, asyncio.Queue[Item]] = {}
        self.progress: dict[str, str] = {}
        self.unsolicited: asyncio.Queue[Item] = asyncio.Queue(UNSOLICITED_BACKLOG)
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
        """Send one message, as the client wrote it, on one line (MCP stdio: newline-delimited)."""
        # A JSON text can hold a line break only as insignificant whitespace (never inside a string).
        line = body.replace(b"\r", b" ").replace(b"\n", b" ") + b"\n"
        assert self.process.stdin is not None  # started with stdin=PIPE
        async with self._write_lock:
            self.process.stdin.write(line)
            await self.process.stdin.drain()

    def open_request(self, message: McpMessage) -> asyncio.Queue[Item]:
        queue: asyncio.Queue[Item] = asyncio.Queue()
        key = _key(message.id)
        self.pending[key] = queue
        meta = message.params.get("_meta") if isinstance(message.params, dict) else None
        token = meta.get("progressToken") if isinstance(meta, dict) else None
        if token is not None:
            self.progress[_key(token)] = key
        return queue

    def close_request(self, message: McpMessage) -> None:
        key = _key(message.id)
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
            queue = self.pending.get(_key(message["id"]))
            if queue is not None:
                queue.put_nowait((line, True))
            return
        target = None
        if message.get("method") == "notifications/progress":
            token = (message.get("params") or {}).get("progressToken")
            target = self.pending.get(self.progress.get(_key(token), ""))
        if target is None and self.pending:
            # A server request or notification sent while a request is open belongs to that request's stream.
            target = self.pending[next(reversed(self.pending))]
        if target is not None:
            target.put_nowait((line, False))
        elif self.unsolicited.full():
            log.warning("stdio server %s: no GET stream is reading; message dropped", self.server)
        else:
            self.unsolicited.put_nowait((line, False))

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
            self.alive = False
            for queue in self.pending.values():
                queue.put_nowait(None)
            with contextlib.suppress(asyncio.QueueFull):
                self.unsolicited.put_nowait(None)

    async def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        await drain_stderr(self.process.stderr, self.server, self.stderr)

    async def stop(self) -> None:
        self.alive = False
        await stop_process(self.process)
        for task in self._tasks:
            task.cancel()
