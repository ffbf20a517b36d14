"""Relaying a streamed answer (deputy.gateway.responses) and what the audit stage records of its end.

An upstream that breaks off mid-stream raises its transport's error inside the relay's task group; the caller
must see that error itself (not an ExceptionGroup its ``except`` misses), so it can end the client's body
cleanly and mark it incomplete; the ``call.outcome`` record then says ``complete: false``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
from starlette.types import Message

from deputy.audit.log import AuditLog
from deputy.gateway.audit_stage import AuditStage
from deputy.gateway.jsonrpc import parse_message
from deputy.gateway.principal import Principal
from deputy.gateway.responses import end_body, relay_until_disconnect


class UpstreamBrokeOff(ConnectionError):
    """Stands for the transport's error (aiohttp's ClientPayloadError) when the upstream dies mid-answer."""


async def breaking_chunks() -> AsyncIterator[bytes]:
    yield b"event: message\ndata: {}\n\n"
    raise UpstreamBrokeOff("connection lost mid-body")


async def endless_chunks() -> AsyncIterator[bytes]:
    while True:
        yield b": keep-alive\n\n"
        await asyncio.sleep(0)


class Client:
    """The ASGI side of one connection: what was sent to it; it leaves after ``leaves_after`` messages if given."""

    def __init__(self, leaves_after: int | None = None) -> None:
        self.sent: list[Message] = []
        self.gone = asyncio.Event()
        self.leaves_after = leaves_after

    async def receive(self) -> Message:
        await self.gone.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: Message) -> None:
        self.sent.append(message)
        if self.leaves_after is not None and len(self.sent) >= self.leaves_after:
            self.gone.set()


async def test_an_error_of_the_stream_is_raised_as_itself_not_in_an_exception_group() -> None:
    client = Client()
    with pytest.raises(UpstreamBrokeOff):
        await relay_until_disconnect(breaking_chunks(), client.receive, client.send)
    assert [m["body"] for m in client.sent] == [b"event: message\ndata: {}\n\n"]  # what was relayed stays relayed


async def test_the_relay_says_whether_the_stream_ran_out_or_the_client_left() -> None:
    async def two_chunks() -> AsyncIterator[bytes]:
        yield b"a"
        yield b"b"

    client = Client()
    assert await relay_until_disconnect(two_chunks(), client.receive, client.send) is True

    leaving = Client(leaves_after=3)
    assert await relay_until_disconnect(endless_chunks(), leaving.receive, leaving.send) is False


class RecordingLog:
    """Keeps the records appended, in order (the audit log's storage is not what these tests are about)."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []

    async def append(self, record: dict[str, Any], *, linger: bool = False) -> None:
        self.records.append(record)


async def recorded_outcome(answer: list[Message]) -> dict[str, Any]:
    """The ``call.outcome`` record of an answer made of ``answer``'s ASGI messages."""
    audit_log = RecordingLog()
    stage = AuditStage(cast(AuditLog, audit_log), "store")
    client = Client()
    principal = Principal(user="alice", agent="agent", actors=(), txn=None, token_id="jti", server="demo",
                          scopes=frozenset())
    message = parse_message(b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo"}}')
    send, finish = stage.outcome_recorder(client.send, principal, message, "d" * 32)
    for part in answer:
        await send(part)
    await finish()
    await asyncio.gather(*stage._pending)  # the record is appended without holding the answer
    (record,) = audit_log.records
    return record


START: Message = {"type": "http.response.start", "status": 200, "headers": []}
CHUNK: Message = {"type": "http.response.body", "body": b"data: 1\n\n", "more_body": True}


async def test_an_answer_ended_as_it_should_be_is_recorded_complete() -> None:
    record = await recorded_outcome([START, CHUNK, {"type": "http.response.body", "body": b"", "more_body": False}])
    assert record["complete"] is True and record["response_bytes"] == len(CHUNK["body"])
    whole = await recorded_outcome([START, {"type": "http.response.body", "body": b"{}"}])  # more_body absent
    assert whole["complete"] is True


async def test_an_answer_cut_short_or_never_ended_is_recorded_incomplete() -> None:
    sent: list[Message] = []

    async def collect(message: Message) -> None:
        sent.append(message)

    await end_body(collect, complete=False)
    cut = await recorded_outcome([START, CHUNK, *sent])
    assert cut["complete"] is False and cut["response_bytes"] == len(CHUNK["body"])
    never_ended = await recorded_outcome([START, CHUNK])
    assert never_ended["complete"] is False
