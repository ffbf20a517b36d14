"""A stdio server's stderr: drained for as long as the process lives, relayed a bounded line at a time.

MCP transports (2026-07-28, stdio): "The server MAY write UTF-8 strings to its standard error for any logging
purposes"; the client "MAY capture, forward, or ignore" it. Deputy forwards it to its own log, each line a
record of logger ``deputy.upstream.stderr`` at INFO with the server's name as field ``server``. What it may not
do is stop reading: a process whose stderr pipe is full blocks in its next write and answers nothing more. So
the reader takes the stream in chunks, never a line at a time (``StreamReader.readline`` raises on a line over
the stream's limit, and a reader that stops on that leaves the pipe to fill), keeps at most
:data:`LOGGED_BYTES` of each line and counts the rest, and shows every line's controls as escapes
(:func:`deputy.display_text.visible`): the text is the server's, and a carriage return, an escape sequence or a
line feed must not forge or hide lines of Deputy's own log. A flood is read in full but logged at most
:data:`LINES_PER_SECOND` lines a second per server (a burst of :data:`BURST`); the lines left out are counted
and the count is logged once lines are logged again, and when the stream ends.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from deputy.display_text import visible

log = logging.getLogger("deputy.upstream.stderr")

LOGGED_BYTES = 1024  # of one stderr line; the rest is counted, not kept
CHUNK = 64 * 1024
LINES_PER_SECOND = 50.0  # per server, all its sessions together
BURST = 200


class StderrLines:
    """Bytes in, bounded printable lines out."""

    def __init__(self, keep: int = LOGGED_BYTES) -> None:
        self.keep = keep
        self._kept = bytearray()
        self._dropped = 0

    def feed(self, chunk: bytes) -> list[str]:
        """The lines that ``chunk`` completes."""
        lines = []
        start = 0
        while (end := chunk.find(b"\n", start)) != -1:
            self._add(chunk[start:end])
            lines.append(self._take())
            start = end + 1
        self._add(chunk[start:])
        return lines

    def end(self) -> list[str]:
        """The last line, when the stream ended without a line feed."""
        return [self._take()] if self._kept or self._dropped else []

    def _add(self, part: bytes) -> None:
        room = self.keep - len(self._kept)
        self._kept += part[:room]
        self._dropped += max(0, len(part) - room)

    def _take(self) -> str:
        kept = bytes(self._kept)
        if kept.endswith(b"\r") and not self._dropped:
            kept = kept[:-1]
        text = visible(kept.decode("utf-8", errors="replace"))
        if self._dropped:
            text += f" … {self._dropped} bytes dropped"
        self._kept.clear()
        self._dropped = 0
        return text


class LineBudget:
    """A token bucket of log lines (``rate`` a second, at most ``burst`` saved): how many a flood may log."""

    def __init__(self, rate: float = LINES_PER_SECOND, burst: int = BURST,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self._tokens = float(burst)
        self._at = clock()
        self.dropped = 0  # lines left out since the last one logged

    def take(self) -> bool:
        now = self.clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        self.dropped += 1
        return False


class StderrRelay:
    """One server's stderr lines to the log, within one :class:`LineBudget` for all its processes."""

    def __init__(self, server: str, budget: LineBudget | None = None) -> None:
        self.server = server
        self.budget = budget or LineBudget()

    def line(self, text: str) -> None:
        if self.budget.take():
            self.report_dropped()
            log.info("%s", text, extra={"server": self.server})

    def report_dropped(self) -> None:
        if self.budget.dropped:
            dropped, self.budget.dropped = self.budget.dropped, 0
            log.warning("%d stderr lines not logged (more than %g a second)", dropped, self.budget.rate,
                        extra={"server": self.server, "dropped": dropped})


async def drain_stderr(stream: asyncio.StreamReader, server: str, relay: StderrRelay | None = None) -> None:
    """Log ``stream`` line by line until it ends; a line of any length never stops the reading."""
    relay = relay or StderrRelay(server)
    lines = StderrLines()
    while chunk := await stream.read(CHUNK):
        for line in lines.feed(chunk):
            relay.line(line)
    for line in lines.end():
        relay.line(line)
    relay.report_dropped()
