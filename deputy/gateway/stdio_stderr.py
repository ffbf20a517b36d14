"""A stdio server's stderr: drained for as long as the process lives, logged a bounded line at a time.

MCP transports (2026-07-28, stdio): "The server MAY write UTF-8 strings to its standard error for any logging
purposes"; the client "MAY capture, forward, or ignore" it. What it may not do is stop reading: a process
whose stderr pipe is full blocks in its next write and answers nothing more. So the reader takes the stream
in chunks, never a line at a time (``StreamReader.readline`` raises on a line over the stream's limit, and a
reader that stops on that leaves the pipe to fill), keeps at most :data:`LOGGED_BYTES` of each line and counts
the rest, and logs every line with its controls shown as escapes
(:func:`deputy.display_text.visible`): the text is the server's, and a carriage return, an escape sequence
or a line feed must not forge or hide lines of Deputy's own log.
"""

from __future__ import annotations

import asyncio
import logging

from deputy.display_text import visible

log = logging.getLogger("deputy.gateway.stdio_upstream")

LOGGED_BYTES = 1024  # of one stderr line; the rest is counted, not kept
CHUNK = 64 * 1024


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


async def drain_stderr(stream: asyncio.StreamReader, server: str) -> None:
    """Log ``stream`` line by line until it ends; a line of any length never stops the reading."""
    lines = StderrLines()
    while chunk := await stream.read(CHUNK):
        for line in lines.feed(chunk):
            log.info("stdio server %s: %s", server, line)
    for line in lines.end():
        log.info("stdio server %s: %s", server, line)
