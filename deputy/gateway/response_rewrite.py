"""One filter for every answer relayed from a server with policies, whatever its transport path.

Every JSON body and every SSE event an upstream sends towards a client of a server with
policies — the answer to a POST (JSON or SSE), a GET stream, a stream resumed with
``Last-Event-ID`` (MCP Streamable HTTP §Resumability and Redelivery), a stdio session's
streams — passes these helpers with the exchange's ``rewrite_result`` hook
(:meth:`deputy.gateway.policy_stage.PolicyStage.answer_filter`), so an answer reaches the
client filtered for the principal of the request that carries it (for a resumed stream, the
principal of the GET), whichever request it first answered:

* an ``application/json`` body (:func:`rewrite_json_body`): parsed, each response's
  ``result`` rewritten, serialised again (the caller sets the new length);
* an SSE stream (:func:`rewrite_sse`, :class:`SseRewriter`): parsed incrementally into events
  (separated by a blank line; LF, CRLF or CR line ends; ``data:`` lines joined by ``"\\n"``).
  Events that are not a response pass through byte for byte and in order, and so does an
  event whose data is empty — the priming event of a resumable stream (``id:`` and an empty
  ``data:``), which a client never dispatches (WHATWG HTML §9.2.6, "dispatch the event": an
  empty data buffer dispatches nothing). A response event has its data replaced by the
  rewritten message, its other fields and their line ends kept (:func:`_join_lines`).

Two modes. The answer to a *list request* (``answers_list=True``) carries one response, its
own, so *every* response in it (``result`` or ``error``, no ``method``) is treated as that one,
whatever its ``id`` says, and a result that is not an object fails. Any other answer
(``answers_list=False``: another POST, a GET stream, a replay) may still carry a list: a
replayed list answer, or a list answer the upstream routed to another request's stream (the
SDK keys its streams by ``str(id)``, so two requests with ids ``5`` and ``"5"`` share one).
There the hook is applied to each response whose result holds a list's items key
(:data:`LIST_ITEMS`) — which no other MCP result has — and events or bodies whose bytes
cannot hold such a key (:func:`may_hold_list`) are not even parsed, so a tool's answer streams
at full speed. The hook itself picks the list by that key, so it is exact without knowing
which request a replayed answer belonged to (no per-session bookkeeping that another replica
or a restart would not have).

Fail closed: a body or data event that is not JSON (when it may hold a list), a result the hook
cannot rewrite, or, for a list request, an event larger than :data:`MAX_REWRITTEN`, is
replaced by a JSON-RPC error (code -32603, "could not filter the list") for the response's id
— never passed unfiltered. Past :data:`MAX_REWRITTEN` another answer is passed on as it comes
only while none of its bytes could hold a list key; when one appears the stream is ended there,
inside the event, which a client then discards (an SSE event without its blank line is never
dispatched; a JSON body cut short does not parse). An oversized JSON body is the caller's to
handle (it must not read it whole): :class:`ListKeyScanner` finds a key across chunk seams.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from deputy import bounded_json
from deputy.gateway.responses import JSONRPC_INTERNAL_ERROR, jsonrpc_error

log = logging.getLogger(__name__)

RewriteResult = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
# The most of one JSON body or one SSE event held in memory to be rewritten.
MAX_REWRITTEN = 4 * 1024 * 1024
FAILED = "could not filter the list"
# Per list method (MCP 2026-07-28 schema, ListToolsResult and its siblings): the key of the item
# list in its result, and the field of an item that names it. No other result has these keys.
LIST_ITEMS = {"tools/list": ("tools", "name"), "prompts/list": ("prompts", "name"),
              "resources/list": ("resources", "uri"), "resources/templates/list": ("resourceTemplates", "uriTemplate")}
# Other spellings of an items key that a client may read as it (the Python SDK's models take field names as well
# as aliases): no filter reads them, so a result holding one is refused, never passed.
UNFILTERED_ALIASES = ("resource_templates",)
# A key as serialised JSON: inside a string a quote is escaped, so these bytes are a key or a whole string value.
_LIST_KEYS = tuple(f'"{key}"'.encode() for key in (*(key for key, _ in LIST_ITEMS.values()), *UNFILTERED_ALIASES))
_SEAM = max(len(key) for key in _LIST_KEYS) - 1
BOM = b"\xef\xbb\xbf"
_ESCAPED_LETTER = re.compile(rb"\\u00[4-7][0-9A-Fa-f]")  # U+0040..U+007F: every letter of every list key

RequestId = str | int | None


class RewriteRefused(Exception):
    """Raised by a hook that cannot rewrite a result (no decision can be made, a list that is not one): the
    result is replaced by the error, logged without a traceback (an expected refusal, not a bug)."""


def may_hold_list(data: bytes) -> bool:
    """Whether ``data`` could be (part of) an answer carrying a list: it holds a list's items key — or an escaped
    ASCII letter, with which a key can be spelt so that no byte scan finds it (``"\\u0074ools"`` is ``"tools"``;
    JSON writers escape no letter, so ordinary text, non-ASCII escapes included, is not parsed for it)."""
    return _ESCAPED_LETTER.search(data) is not None or any(key in data for key in _LIST_KEYS)


class ListKeyScanner:
    """:func:`may_hold_list` over a stream of chunks: a key split across two chunks is still found."""

    def __init__(self) -> None:
        self._tail = b""

    def clean(self, chunk: bytes) -> bool:
        """True while nothing fed so far could hold a list key."""
        if may_hold_list(chunk) or may_hold_list(self._tail + chunk[:_SEAM]):
            return False
        self._tail = (self._tail + chunk[-_SEAM:])[-_SEAM:]
        return True


def failure(request_id: RequestId) -> bytes:
    """The serialised JSON-RPC error sent instead of a response that could not be rewritten."""
    return _dump(jsonrpc_error(JSONRPC_INTERNAL_ERROR, FAILED, request_id=request_id))


def _dump(message: Any) -> bytes:
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()


def _is_response(message: Any) -> bool:
    return isinstance(message, dict) and "method" not in message and ("result" in message or "error" in message)


async def _rewrite_message(message: Any, request_id: RequestId, rewrite: RewriteResult, answers_list: bool) -> Any:
    """``message`` with the result of each response in it rewritten; a failure becomes the error."""
    if isinstance(message, list):  # a JSON-RPC batch
        return [await _rewrite_message(one, request_id, rewrite, answers_list) for one in message]
    if not _is_response(message) or "result" not in message:
        return message  # a request, a notification, or an error response: nothing to filter
    own_id = message.get("id")
    reply_id = own_id if isinstance(own_id, str | int) and not isinstance(own_id, bool) else request_id
    result = message["result"]
    if not isinstance(result, dict):
        if not answers_list:
            return message  # holds no list
        log.warning("response to a filtered request has a result that is not an object; replaced by an error")
        return jsonrpc_error(JSONRPC_INTERNAL_ERROR, FAILED, request_id=reply_id)
    aliased = any(alias in result for alias in UNFILTERED_ALIASES)
    if not answers_list and not aliased and not any(key in result for key, _ in LIST_ITEMS.values()):
        return message
    if aliased:
        log.warning("a list under a key no filter reads (%s); replaced by an error", ", ".join(UNFILTERED_ALIASES))
        return jsonrpc_error(JSONRPC_INTERNAL_ERROR, FAILED, request_id=reply_id)
    try:
        rewritten = await rewrite(result)
    except (RewriteRefused, ValueError) as refused:
        log.warning("a list could not be filtered (%s); replaced by an error", refused)
        return jsonrpc_error(JSONRPC_INTERNAL_ERROR, FAILED, request_id=reply_id)
    except Exception:  # fail closed: whatever went wrong, the unfiltered result does not pass
        log.exception("rewriting a response failed; replaced by an error")
        return jsonrpc_error(JSONRPC_INTERNAL_ERROR, FAILED, request_id=reply_id)
    return {**message, "result": rewritten}


async def rewrite_json_body(body: bytes, request_id: RequestId, rewrite: RewriteResult, *,
                            answers_list: bool = True) -> bytes:
    """A JSON body with its responses' results rewritten; ``body`` itself when nothing in it changes."""
    if not answers_list and not may_hold_list(body):
        return body
    try:
        message = bounded_json.loads(body)
    except ValueError:
        log.warning("response to a filtered request is not JSON; replaced by an error")
        return failure(request_id)
    rewritten = await _rewrite_message(message, request_id, rewrite, answers_list)
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

    def __init__(self, request_id: RequestId, rewrite: RewriteResult, *, answers_list: bool = True) -> None:
        self.request_id = request_id
        self.rewrite = rewrite
        self.answers_list = answers_list
        self._buffer = b""
        self._scanned = 0  # where the first incomplete line of the current event starts
        self._lines: list[tuple[int, int, int]] = []  # (start, end, next) of each line of the current event
        self._passing: ListKeyScanner | None = None  # past MAX_REWRITTEN: the rest passes while it holds no list key
        self._at_start = True  # a byte order mark may still begin the stream
        self.failed = False  # the stream must end here

    async def feed(self, chunk: bytes, final: bool = False) -> bytes:
        """The output for everything fed so far that can be decided; ``final`` at the end of the stream."""
        if self._passing is not None:
            if self._passing.clean(chunk):
                return chunk
            log.warning("a list key in an oversized answer of a server with policies; stream ended")
            self.failed = True
            return b""
        self._buffer += chunk
        out: list[bytes] = []
        if self._at_start:
            # WHATWG HTML §9.2.5: one leading U+FEFF is not part of the first line; passed on as it came.
            if len(self._buffer) < len(BOM) and BOM.startswith(self._buffer) and not final:
                return b""
            self._at_start = False
            if self._buffer.startswith(BOM):
                out.append(BOM)
                self._buffer = self._buffer[len(BOM):]
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
            out.append(self._oversized())
        return b"".join(out)

    def _oversized(self) -> bytes:
        buffer = self._buffer
        self._buffer, self._scanned, self._lines = b"", 0, []
        if not self.answers_list:
            scanner = ListKeyScanner()
            if scanner.clean(buffer):
                self._passing = scanner
                return buffer
        log.warning("an SSE event of a filtered answer is larger than %d bytes; stream ended", MAX_REWRITTEN)
        self.failed = True
        return b"event: message\ndata: " + failure(self.request_id) + b"\n\n"

    async def _event(self, end: int) -> bytes:
        """The bytes of the event in ``buffer[:end]`` (rewritten if it is a response); drops them from the buffer."""
        buffer, lines = self._buffer, self._lines
        self._buffer, self._scanned, self._lines = buffer[end:], 0, []
        data = [buffer[s:e] for s, e, _ in lines if buffer[s:e] == b"data" or buffer[s:e].startswith(b"data:")]
        if not data:
            return buffer[:end]  # comments, retry: nothing a client takes as a message
        payload = b"\n".join(_field_value(line) for line in data)
        if not payload or (not self.answers_list and not may_hold_list(payload)):
            return buffer[:end]  # an empty data buffer is never dispatched (a priming event); or no list in it
        try:
            message = bounded_json.loads(payload)
        except ValueError:
            log.warning("an SSE event of a filtered answer is not JSON; replaced by an error")
            replacement = failure(self.request_id)
        else:
            rewritten = await _rewrite_message(message, self.request_id, self.rewrite, self.answers_list)
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
        return _join_lines(out)


def _join_lines(lines: list[bytes]) -> bytes:
    """The lines of a rewritten event, each with its own end, joined so that a client reads them apart.

    A line ended by a lone CR is followed in the upstream's stream by anything but an LF (else the
    two would be one CRLF). Once data lines are dropped or an end is supplied, an LF may follow it:
    the blank line's. A client reads that pair as one CRLF (WHATWG HTML §9.2.5), the event never
    ends and the next one is read into it; the CR's line therefore ends with a whole CRLF.
    """
    return b"".join(line + b"\n" if line.endswith(b"\r") and following.startswith(b"\n") else line
                    for line, following in zip(lines, [*lines[1:], b""], strict=True))


def _field_value(line: bytes) -> bytes:
    value = line[len(b"data:"):]
    return value[1:] if value.startswith(b" ") else value


async def rewrite_sse(chunks: AsyncIterator[bytes], request_id: RequestId, rewrite: RewriteResult, *,
                      answers_list: bool = True) -> AsyncIterator[bytes]:
    """``chunks`` of an SSE stream with each response event rewritten (see the module docstring)."""
    rewriter = SseRewriter(request_id, rewrite, answers_list=answers_list)
    async for chunk in chunks:
        if out := await rewriter.feed(chunk):
            yield out
        if rewriter.failed:
            return
    if out := await rewriter.feed(b"", final=True):
        yield out
