"""A stdio session's open requests and GET streams: keyed as the server reads ids, one per key, bounded, and woken at
the end.

The end-to-end abuse cases are in tests/e2e/test_stdio_open_requests.py; here, what is hard to reach through
sockets: the message-count bound (socket buffers hold far more small messages than it), the key of ids a
client cannot even send (``1.0``), and the GET streams' backlog (its bounds, and its end reaching every reader).
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from deputy.gateway.jsonrpc import parse_message
from deputy.gateway.stdio_session import (
    REQUEST_BACKLOG,
    REQUEST_BACKLOG_BYTES,
    UNSOLICITED_BACKLOG,
    UNSOLICITED_BACKLOG_BYTES,
    Ending,
    Inbox,
    RequestInProgress,
    StdioSession,
    Unsolicited,
    request_key,
)

HELD_SERVER = Path(__file__).parents[1] / "e2e" / "held_stdio_server.py"


def test_ids_a_javascript_server_reads_as_one_number_share_a_key() -> None:
    assert request_key(1) == request_key(1.0)
    assert request_key(2**53 + 1) == request_key(2**53) == request_key(float(2**53))
    assert request_key(-0.0) == request_key(0)
    assert request_key(2**53 + 2) != request_key(2**53)


def test_ids_of_other_kinds_never_share_a_key_with_a_number() -> None:
    assert request_key("1") != request_key(1)
    assert request_key(True) != request_key(1)
    assert request_key(None) != request_key(0)
    assert request_key(10**400) == str(10**400), "beyond every double: keyed by its digits, no error"


async def _drained(inbox: Inbox) -> list[object]:
    items: list[object] = []
    while not isinstance(item := await inbox.get(), Ending) and not item[1]:
        items.append(item)
    items.append(item)
    return items


async def test_past_the_message_bound_a_request_is_cut_and_what_waited_is_dropped() -> None:
    inbox = Inbox()
    for _ in range(REQUEST_BACKLOG):
        assert inbox.put(b"{}", False)
    assert not inbox.put(b"{}", False), "one message more: cut"
    assert not inbox.put(b'{"id":1}', True), "nothing comes after the cut, not even the answer"
    assert await inbox.get() is Ending.CUT, "what waited is dropped, the reader told at once"


async def test_past_the_byte_bound_a_request_is_cut() -> None:
    inbox = Inbox()
    assert inbox.put(b"x" * REQUEST_BACKLOG_BYTES, False)
    assert not inbox.put(b"x", False)
    assert await inbox.get() is Ending.CUT


async def test_a_reader_that_keeps_up_is_never_cut_and_the_answer_always_fits() -> None:
    inbox = Inbox()
    for _ in range(3 * REQUEST_BACKLOG):
        assert inbox.put(b"x" * 1024, False)
        await inbox.get()
    for _ in range(REQUEST_BACKLOG):
        assert inbox.put(b"{}", False)
    assert inbox.put(b'{"id":1}', True), "the answer fits at the bound"
    inbox.end(Ending.EXITED)  # too late: the answer is queued
    assert (await _drained(inbox))[-1] == (b'{"id":1}', True)


async def test_the_get_streams_backlog_is_bounded_by_bytes_as_well_as_messages() -> None:
    """Before, only the count was: a thousand 4 MiB lines no GET stream read were 4 GiB held for one session."""
    backlog = Unsolicited()
    assert backlog.put(b"x" * (UNSOLICITED_BACKLOG_BYTES - 1))
    assert not backlog.put(b"xx"), "past the byte bound: dropped"
    assert backlog.put(b"x"), "what still fits is kept"
    assert await backlog.get() == b"x" * (UNSOLICITED_BACKLOG_BYTES - 1)
    assert backlog.put(b"{}"), "read: room again"
    counted = Unsolicited()
    assert all(counted.put(b"{}") for _ in range(UNSOLICITED_BACKLOG))
    assert not counted.put(b"{}")


async def test_the_end_reaches_every_get_stream_and_each_message_only_one() -> None:
    """Two GET streams on one session: a message goes to one of them, the process's end to both (before, one of
    them waited for ever on a session that was gone)."""
    backlog = Unsolicited()
    readers = [asyncio.create_task(backlog.get()) for _ in range(2)]
    await asyncio.sleep(0)
    assert backlog.put(b'{"n":1}')
    await asyncio.sleep(0)
    done = [task for task in readers if task.done()]
    assert [task.result() for task in done] == [b'{"n":1}'], "one reader, one message"
    waiting = [task for task in readers if not task.done()]
    backlog.end()
    assert await asyncio.wait_for(waiting[0], 5) is Ending.EXITED
    assert await backlog.get() is Ending.EXITED, "and any reader after"
    assert not backlog.put(b'{"n":2}'), "nothing is kept once the session has ended"


async def test_what_waits_is_read_before_the_end() -> None:
    backlog = Unsolicited()
    assert backlog.put(b"1") and backlog.put(b"2")
    backlog.end()
    assert [await backlog.get() for _ in range(3)] == [b"1", b"2", Ending.EXITED]


@pytest.fixture
async def session(tmp_path: Path) -> AsyncIterator[StdioSession]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(HELD_SERVER), "--received", str(tmp_path / "received"), stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    session = StdioSession("s", "held", process)
    try:
        yield session
    finally:
        await session.stop()


def _call(request_id: int, tool: str) -> bytes:
    return json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
                       "params": {"name": tool, "arguments": {}}}).encode()


async def test_a_second_request_with_an_open_key_is_refused_and_stop_wakes_the_first(session: StdioSession) -> None:
    first = parse_message(_call(2**53 + 1, "hold"))
    inbox = session.open_request(first)
    await session.write(first.raw)
    with pytest.raises(RequestInProgress):
        session.open_request(parse_message(_call(2**53, "hold")))
    assert session.pending[request_key(first.id)] is inbox, "the refused request changed nothing"
    await session.stop()
    assert await inbox.get() is Ending.EXITED
    assert session.open_request(parse_message(_call(3, "hold"))).closed, "a request after the end ends at once"


async def test_an_answer_with_the_id_rounded_reaches_its_request_and_frees_the_id(session: StdioSession) -> None:
    held = parse_message(_call(2**53 + 1, "hold"))
    inbox = session.open_request(held)
    await session.write(held.raw)
    release = parse_message(_call(4, "release"))
    released = session.open_request(release)
    await session.write(release.raw)
    answer = await inbox.get()
    assert isinstance(answer, tuple) and answer[1], answer
    assert json.loads(answer[0])["id"] == 2**53, "the server's id, rounded"
    await released.get()
    assert not session.pending, "answered: nothing more is routed to either"
    session.close_request(held, inbox)
    session.close_request(release, released)
