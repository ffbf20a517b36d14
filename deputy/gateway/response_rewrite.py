"""Rewriting the result of the response to one request on its way back to the client.

An :class:`~deputy.gateway.exchange.Exchange` may carry a ``rewrite_result`` hook (list
results filtered by policy, :mod:`deputy.gateway.policy_stage`). The upstreams apply it
with these helpers to whatever answers the request:

* an ``application/json`` body (:func:`rewrite_json_body`): parsed, the response's
  ``result`` rewritten, serialised again (the caller sets the new length);
* an SSE stream (:func:`rewrite_sse`): parsed incrementally into events (separated by
  a blank line; LF, CRLF or CR line ends; ``data:`` lines joined by ``"\\n"``). Events
  that are not a response pass through byte for byte and in order; a response event
  has its data replaced by the rewritten message, its other fields kept.

A reply to one request carries one response, its own, so *every* response in it
(``result`` or ``error``, no ``method``) is treated as that one, whatever its ``id``
says: an upstream cannot slip an unfiltered list past the hook under another id.
Fail closed: a body or data event that is not JSON, a result the hook cannot
rewrite, or an event larger than :data:`MAX_REWRITTEN` is replaced by a JSON-RPC
error (code -32603, "could not filter the list") for the request's id — never passed
unfiltered. An oversized JSON body is the caller's to refuse (it must not read it).
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from deputy.gateway.responses import JSONRPC_INTERNAL_ERROR, jsonrpc_error

log = logging.getLogger(__name__)

RewriteResult = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
# The most of one JSON body or one SSE event held in memory to be rewritten.
MAX_REWRITTEN = 4 * 1024 * 1024
FAILED = "could not filter the list"

RequestId = str | int | None


def failure(request_id: RequestId) -> bytes:
    """The serialised JSON-RPC error sent instead of a response that could not be rewritten."""
    return _dump(jsonrpc_error(JSONRPC_INTERNAL_ERROR, FAILED, request_id=request_id))


def _dump(message: Any) -> bytes:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()


def _is_response(message: Any) -> bool:
    return isinstance(message, dict) and "method" not in message and ("result" in message or "error" in message)


async def _rewrite_message(message: Any, request_id: RequestId, rewrite: RewriteResult) -> Any:
    """``message`` with the result of each response in it rewritten; a failure becomes the error."""
    if isinstance(message, list):  # a JSON-RPC batch
        return [await _rewrite_message(one, request_id, rewrite) for one in message]
    if not _is_response(message) or "result" not in message:
        return message  # a request, a notification, or an error response: nothing to filter
    own_id = message.get("id")
    reply_id = own_id if isinstance(own_id, str | int) and not isinstance(own_id, bool) else request_id
    result = message["result"]
    if not isinstance(result, dict):
        log.warning("response to a filtered request has a result that is not an object; replaced by an error")
        return jsonrpc_error(JSONRPC_INTERNAL_ERROR, FAILED, request_id=reply_id)
    try:
        rewritten = await rewrite(result)
    except Exception:  # fail closed: whatever went wrong, the unfiltered result does not pass
        log.exception("rewriting a response failed; replaced by an error")
        return jsonrpc_error(JSONRPC_INTERNAL_ERROR, FAILED, request_id=reply_id)
    return {**message, "result": rewritten}


async def rewrite_json_body(body: bytes, request_id: RequestId, rewrite: RewriteResult) -> bytes:
    """A JSON body with its response's result rewritten; unchanged when it holds no result to rewrite."""
    try:
        message = json.loads(body)
    except ValueError:
        log.warning("response to a filtered request is not JSON; replaced by an error")
        return failure(request_id)
    rewritten = await _rewrite_message(message, request_id, rewrite)
    return body if rewritten is message else _dump(rewritten)


def _split_line(buffer: bytes, start: int, final: bool) -> tuple[int, int] | None:
    """(end of the line, start of the next) for the line at ``start``, or None if it is not complete yet."""
    lf = buffer.find(b"\n", start)
    cr = buffer.find(b"\r", start)
    if cr == -1 and lf == -1:
        return (len(buffer), len(buffer)) if final and start < len(buffer) else None
    if cr == -1 or (lf != -1 and lf < cr):
        return lf, lf + 1
    if cr + 1 < len(buffer):
        return cr, cr + 2 if buffer[cr + 1:cr + 2] == b"\n" else cr + 1
    # A CR at the very end: a CRLF may be split across chunks.
    return (cr, cr + 1) if final else None


class SseRewriter:
    """Feed an SSE stream in chunks; get back the same bytes with each response event rewritten."""

    def __init__(self, request_id: RequestId, rewrite: RewriteResult) -> None:
        self.request_id = request_id
        self.rewrite = rewrite
        self._buffer = b""
        self._scanned = 0  # where the first incomplete line of the current event starts
        self._lines: list[tuple[int, int, int]] = []  # (start, end, next) of each line of the current event
        self.failed = False  # an event grew past MAX_REWRITTEN: the stream must end

    async def feed(self, chunk: bytes, final: bool = False) -> bytes:
        """The output for everything fed so far that can be decided; ``final`` at the end of the stream."""
        self._buffer += chunk
        out: list[bytes] = []
        while (line := _split_line(self._buffer, self._scanned, final)) is not None:
            end, following = line
            if end == self._scanned:  # a blank line: the event is complete
                out.append(await self._event(following))
            else:
                self._lines.append((self._scanned, end, following))
                self._scanned = following
        if final and self._lines:  # an event the upstream never ended: decided like a complete one
            out.append(await self._event(len(self._buffer)))
        elif len(self._buffer) > MAX_REWRITTEN:
            log.warning("an SSE event of a filtered response is larger than %d bytes; stream ended", MAX_REWRITTEN)
            self.failed = True
            self._buffer, self._scanned, self._lines = b"", 0, []
            out.append(b"event: message\ndata: " + failure(self.request_id) + b"\n\n")
        return b"".join(out)

    async def _event(self, end: int) -> bytes:
        """The bytes of the event in ``buffer[:end]`` (rewritten if it is a response); drops them from the buffer."""
        buffer, lines = self._buffer, self._lines
        self._buffer, self._scanned, self._lines = buffer[end:], 0, []
        data = [buffer[s:e] for s, e, _ in lines if buffer[s:e] == b"data" or buffer[s:e].startswith(b"data:")]
        if not data:
            return buffer[:end]  # comments, retry: nothing a client takes as a message
        payload = b"\n".join(_field_value(line) for line in data)
        try:
            message = json.loads(payload)
        except ValueError:
            log.warning("an SSE event of a filtered response is not JSON; replaced by an error")
            replacement = failure(self.request_id)
        else:
            rewritten = await _rewrite_message(message, self.request_id, self.rewrite)
            if rewritten is message:
                return buffer[:end]
            replacement = _dump(rewritten)
        out: list[bytes] = []
        placed = False
        for start, stop, following in lines:
            line = buffer[start:stop]
            if line == b"data" or line.startswith(b"data:"):
                if placed:
                    continue
                placed = True
                line = b"data: " + replacement
            out.append(line + (buffer[stop:following] or b"\n"))
        out.append(buffer[lines[-1][2]:end] or b"\n")
        return b"".join(out)


def _field_value(line: bytes) -> bytes:
    value = line[len(b"data:"):]
    return value[1:] if value.startswith(b" ") else value


async def rewrite_sse(chunks: AsyncIterator[bytes], request_id: RequestId,
                      rewrite: RewriteResult) -> AsyncIterator[bytes]:
    """``chunks`` of an SSE stream with each response event rewritten (see the module docstring)."""
    rewriter = SseRewriter(request_id, rewrite)
    async for chunk in chunks:
        if out := await rewriter.feed(chunk):
            yield out
        if rewriter.failed:
            return
    if out := await rewriter.feed(b"", final=True):
        yield out
