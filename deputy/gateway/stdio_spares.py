"""A stdio server's spare processes: started ahead of the sessions that will take them.

MCP transports (2026-07-28, stdio): "The client launches the MCP server as a subprocess", and the session
begins with the client's ``initialize`` (MCP lifecycle, Initialization). Starting the process is the slow part
(seconds for an ``npx`` server), and nothing in it depends on the session: the command and the environment are
the server's (:mod:`deputy.config_servers`; per-user credentials are refused for stdio). So Deputy keeps
``servers.NAME.spare_processes`` of them started, and a new session takes the oldest at once while a
replacement starts in the background.

What a spare may and may not be:

* **Never spoken to.** Nothing is written to a spare's stdin and its stdout is not read before a session takes
  it: ``initialize`` is the session's own first message, and a process serves exactly one session (a spare is
  taken once, then belongs to its session only). Its stderr is drained from the start, through the server's one
  :class:`~deputy.gateway.stdio_stderr.StderrRelay`, so a chatty start cannot block it.
* **Within the caps.** Spares and sessions together never pass ``limits.stdio_sessions_per_server``: spares fill
  only the room the sessions leave (``free_room``), and a new session is never refused because spares hold the
  places — it takes one, which leaves the total unchanged. So the descriptor budget of
  :mod:`deputy.listener` (four per session) covers them. Starting one happens under the upstream's start lock,
  the same step as counting: a session cannot slip in between and overshoot.
* **Not a crash loop.** A spare that exits, or cannot be started, within :data:`HEALTHY_AFTER` seconds is a
  failure; each further failure in a row doubles the wait before the next attempt (:data:`FIRST_BACKOFF` up to
  :data:`MAX_BACKOFF`), and only the first of a run is logged (a warning), then its end (info).
* **Gone with Deputy.** :meth:`SparePool.close` stops every spare (stdin closed, then SIGTERM, then SIGKILL) and
  no new one starts after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from deputy.config import UpstreamServer
from deputy.gateway.stdio_stderr import StderrRelay, drain_stderr

log = logging.getLogger(__name__)

MAX_LINE = 4 * 1024 * 1024  # of one stdout line (the stream's limit)
HEALTHY_AFTER = 10.0  # seconds a spare must live for its exit not to count as a failed start
FIRST_BACKOFF = 0.5  # seconds before the attempt after a first failure; doubled after each further one
MAX_BACKOFF = 60.0
STOP_GRACE = 2.0  # seconds a process has after its stdin closes, then again after SIGTERM


class NotStarted(Exception):
    """The server's process could not be started; the message says why, for the operator."""


async def spawn(server: UpstreamServer) -> asyncio.subprocess.Process:
    """The server's command, started with its configured environment and pipes for all three streams."""
    command = server.command
    assert command is not None  # config validation guarantees command for stdio upstreams
    try:
        return await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, env=dict(server.env), limit=MAX_LINE)
    except FileNotFoundError:
        raise NotStarted(f"command not found: {command[0]}") from None
    except PermissionError:
        raise NotStarted(f"command not executable: {command[0]}") from None
    except OSError as exc:  # e.g. ENOEXEC, ENOTDIR, E2BIG: the exec failed, whatever the reason
        raise NotStarted(f"{command[0]}: {exc.strerror or type(exc).__name__}") from None


async def stop_process(process: asyncio.subprocess.Process) -> None:
    """End ``process`` the way a stdio client does (MCP stdio shutdown): close its stdin, then SIGTERM, then
    SIGKILL, each after :data:`STOP_GRACE`."""
    if process.returncode is not None:
        return
    if process.stdin is not None:
        process.stdin.close()
    try:
        await asyncio.wait_for(process.wait(), STOP_GRACE)
    except TimeoutError:
        # ProcessLookupError: it exited after the wait timed out, before asyncio saw it; it is gone all the same.
        with contextlib.suppress(ProcessLookupError):
            process.terminate()
        try:
            await asyncio.wait_for(process.wait(), STOP_GRACE)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()


@dataclass(eq=False)
class Spare:
    """A started process no one has spoken to yet; its stderr drained since its start."""

    process: asyncio.subprocess.Process
    stderr: asyncio.Task[None]
    started: float = field(default_factory=time.monotonic)
    watch: asyncio.Task[None] | None = None  # ends the spare when its process exits while it waits


def backoff(failures: int) -> float:
    """Seconds to wait before the next start after ``failures`` failed ones in a row."""
    return 0.0 if failures <= 0 else min(MAX_BACKOFF, FIRST_BACKOFF * 2 ** min(failures - 1, 16))


class SparePool:
    """Up to ``wanted`` spares of one stdio server, within ``free_room()``: the places of
    ``limits.stdio_sessions_per_server`` its sessions leave."""

    def __init__(self, server: UpstreamServer, stderr: StderrRelay, starting: asyncio.Lock,
                 free_room: Callable[[], int]) -> None:
        self.server = server
        self.wanted = server.spare_processes
        self.stderr = stderr
        self.starting = starting  # the upstream's: counting and starting is one step for spares and sessions
        self.free_room = free_room
        self.spares: list[Spare] = []
        self.failures = 0  # failed starts in a row
        self._wake = asyncio.Event()
        self._keeper: asyncio.Task[None] | None = None
        self._closed = False

    def __len__(self) -> int:
        return len(self.spares)

    def start(self) -> None:
        """Start spares up to the wanted number, in the background, and keep them there from now on."""
        if self.wanted == 0 or self._closed:
            return
        if self._keeper is None:
            self._keeper = asyncio.create_task(self._keep())
        self._wake.set()

    def refill(self) -> None:
        """A spare or a session's place was freed: start what is missing (once :meth:`start` was called)."""
        if self._keeper is not None:
            self._wake.set()

    def take(self) -> Spare | None:
        """The oldest live spare, now no longer a spare; None when there is none. Call under ``starting``."""
        taken = None
        while self.spares and taken is None:
            spare = self.spares.pop(0)
            if spare.watch is not None:
                spare.watch.cancel()
            if spare.process.returncode is None:
                taken = spare
                if time.monotonic() - spare.started >= HEALTHY_AFTER:
                    self._recovered()
        self.refill()  # its replacement
        return taken

    async def close(self) -> None:
        self._closed = True
        if self._keeper is not None:
            self._keeper.cancel()  # a start it was in is undone by asyncio (the process killed)
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
        spares, self.spares = self.spares, []
        for spare in spares:
            if spare.watch is not None:
                spare.watch.cancel()
        await asyncio.gather(*(stop_process(spare.process) for spare in spares), return_exceptions=True)
        for spare in spares:
            spare.stderr.cancel()

    async def _keep(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while True:
                try:
                    if not await self._start_one():
                        break
                except Exception as exc:  # whatever it was, the keeper outlives it (backing off)
                    self._failed(f"could not be started ({type(exc).__name__}: {exc})")

    async def _start_one(self) -> bool:
        """Start one spare if one is missing and there is room; whether to try again at once."""
        await asyncio.sleep(backoff(self.failures))
        async with self.starting:
            if self._closed or len(self.spares) >= min(self.wanted, self.free_room()):
                return False
            try:
                process = await spawn(self.server)
            except NotStarted as failed:
                self._failed(f"could not be started ({failed})")
                return True
            assert process.stderr is not None  # started with stderr=PIPE
            spare = Spare(process, asyncio.create_task(drain_stderr(process.stderr, self.server.name, self.stderr)))
            spare.watch = asyncio.create_task(self._watch(spare))
            self.spares.append(spare)
        return True

    async def _watch(self, spare: Spare) -> None:
        code = await spare.process.wait()
        if spare in self.spares:
            self.spares.remove(spare)
            if time.monotonic() - spare.started < HEALTHY_AFTER:
                self._failed(f"exited with status {code} before any session used it")
            else:
                self._recovered()
            self.refill()

    def _failed(self, what: str) -> None:
        self.failures += 1
        if self.failures == 1:  # once per run of failures: a crashing command would otherwise flood the log
            log.warning("stdio server %s: a spare process %s; starting spares again with back-off (up to %g s), "
                        "further failures not logged", self.server.name, what, MAX_BACKOFF,
                        extra={"server": self.server.name})

    def _recovered(self) -> None:
        if self.failures:
            log.info("stdio server %s: spare processes start again after %d failures", self.server.name,
                     self.failures, extra={"server": self.server.name})
        self.failures = 0
