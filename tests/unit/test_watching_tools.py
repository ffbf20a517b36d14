"""The gateway notices `notifications/tools/list_changed` in an upstream's answer, however it is chunked."""

from __future__ import annotations

from typing import Any

from deputy.gateway.tools_watch import watching_tools

NOTIFICATION = b'event: message\ndata: {"jsonrpc":"2.0","method":"notifications/tools/list_changed"}\n\n'
RESULT = b'event: message\ndata: {"jsonrpc":"2.0","id":1,"result":{"content":[]}}\n\n'


async def relay(chunks: list[bytes]) -> tuple[int, bytes]:
    """How often the watcher fired, and the bytes that reached the client (unchanged)."""
    fired: list[int] = []
    sent: list[bytes] = []

    async def send(message: Any) -> None:
        if message["type"] == "http.response.body":
            sent.append(message["body"])

    watching = watching_tools(send, lambda: fired.append(1))
    await watching({"type": "http.response.start", "status": 200, "headers": []})
    for chunk in chunks:
        await watching({"type": "http.response.body", "body": chunk, "more_body": True})
    return len(fired), b"".join(sent)


async def test_seen_at_every_split_and_in_tiny_chunks() -> None:
    stream = RESULT + NOTIFICATION + RESULT
    for cut in range(1, len(stream)):
        fired, relayed = await relay([stream[:cut], stream[cut:]])
        assert fired == 1, cut
        assert relayed == stream
    fired, relayed = await relay([bytes([b]) for b in stream])  # one byte per chunk
    assert fired == 1 and relayed == stream


async def test_not_fired_without_the_notification() -> None:
    almost = NOTIFICATION.replace(b"list_changed", b"list_change")
    for cut in range(1, len(almost)):
        fired, _ = await relay([RESULT, almost[:cut], almost[cut:]])
        assert fired == 0, cut
