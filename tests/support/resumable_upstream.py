"""The demo MCP server with resumable streams (MCP Streamable HTTP §Resumability and Redelivery).

`resumable_upstream()` runs the demo server's Streamable HTTP app with sessions, SSE answers and an
event store (`MemoryEventStore`), on a loopback port in a thread, and yields its URL. With a store the
SDK sends a priming event (an ``id:`` and an empty ``data:``) at the start of each POST's stream of a
client speaking 2025-11-25 or later, and answers a GET carrying ``Last-Event-ID`` by replaying the
events stored after it on the same stream — the answer to that POST included.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from mcp.server.streamable_http import EventCallback, EventId, EventMessage, EventStore, StreamId
from mcp.types import JSONRPCMessage

from deputy.demo.server import build_demo_server
from tests.support.sdk_client import free_port


class MemoryEventStore(EventStore):
    """Every event of every stream, in order, kept in memory (a test upstream's lifetime)."""

    def __init__(self) -> None:
        self._next = itertools.count(1)
        self.events: list[tuple[EventId, StreamId, JSONRPCMessage | None]] = []

    async def store_event(self, stream_id: StreamId, message: JSONRPCMessage | None) -> EventId:
        event_id = f"event-{next(self._next)}"
        self.events.append((event_id, stream_id, message))
        return event_id

    async def replay_events_after(self, last_event_id: EventId, send_callback: EventCallback) -> StreamId | None:
        seen = [n for n, (event_id, _, _) in enumerate(self.events) if event_id == last_event_id]
        if not seen:
            return None
        stream = self.events[seen[0]][1]
        for event_id, stream_id, message in self.events[seen[0] + 1:]:
            if stream_id == stream and message is not None:  # a priming event carries nothing to replay
                await send_callback(EventMessage(message, event_id))
        return stream


@contextmanager
def resumable_upstream() -> Iterator[str]:
    """The demo upstream with an event store on a free loopback port, in a thread; yields its MCP URL."""
    port = free_port()
    app = build_demo_server().streamable_http_app(event_store=MemoryEventStore(), retry_interval=1000)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", http="h11",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("resumable upstream did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        server.should_exit = True
        thread.join(10)
