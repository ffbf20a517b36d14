"""What the gateway reads of a request before deciding on it: its headers in one pass, its body whole.

A POST's body is decided on as UTF-8 JSON (RFC 8259 §8.1), so it must be sent as that and nothing else
(:func:`representation_problem`): ``Content-Type: application/json`` with no charset but UTF-8, and no content
coding (RFC 9110 §8.3, §8.4); anything else is answered 415 (§15.5.16). An upstream that honours a charset or a
coding (Express's ``json()`` decodes ``charset=utf-7`` and inflates gzip) would otherwise run another message than
the one decided and recorded; the upstream is sent ``Content-Type: application/json`` of Deputy's own.

The body is capped in size and in time: RFC 9110 §15.5.14 (413 Content Too Large) for a body over
:data:`MAX_REQUEST_BODY`, §15.5.9 (408 Request Timeout) for one that does not arrive within ``[limits]
body_timeout``; a client that leaves mid-body gets nothing. ``traceparent`` and ``tracestate`` are read as W3C
Trace Context §3.2 and §3.3 ask of a header that comes twice (:mod:`deputy.telemetry.tracing` parses them).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum

from starlette.types import Receive, Send

from deputy.gateway.jsonrpc import JsonRpcRefused, McpMessage, parse_message
from deputy.gateway.responses import ANSWERED, JSONRPC_INVALID_REQUEST, Answered, jsonrpc_error, send_json

MAX_REQUEST_BODY = 4 * 1024 * 1024
SESSION_HEADER = b"mcp-session-id"


@dataclass(slots=True)
class RequestHeaders:
    """The request headers the gateway decides on, read in one pass over ``scope["headers"]``."""

    authorization: str | None = None
    session_id: str | None = None
    host: bytes | None = None
    origin: bytes | None = None
    declared_length: int = 0
    traceparent: bytes | None = None  # W3C Trace Context §3.2; two of them: b"" (invalid, §3.2.4)
    tracestate: bytes | None = None  # §3.3; several lines are one list (RFC 9110 §5.3)
    content_type: bytes | None = None  # b"" when sent twice: not one media type
    content_encoding: bytes = b""  # every line, joined: one list (RFC 9110 §5.3)

    @classmethod
    def read(cls, raw: Iterable[tuple[bytes, bytes]]) -> RequestHeaders:
        headers = cls()
        for name, value in raw:
            if name == b"content-length" and value.isdigit():
                headers.declared_length = int(value)
            elif name == b"authorization":
                headers.authorization = value.decode("latin-1")
            elif name == SESSION_HEADER:
                headers.session_id = value.decode("latin-1")
            elif name == b"host":
                headers.host = value
            elif name == b"origin":
                headers.origin = value
            elif name == b"traceparent":
                headers.traceparent = value if headers.traceparent is None else b""
            elif name == b"tracestate":
                headers.tracestate = value if headers.tracestate is None else headers.tracestate + b"," + value
            elif name == b"content-type":
                headers.content_type = value if headers.content_type is None else b""
            elif name == b"content-encoding":
                headers.content_encoding += b"," + value
        return headers


def representation_problem(headers: RequestHeaders) -> str | None:
    """Why a POST body is not sent as the UTF-8 JSON Deputy decides on, or None when it is."""
    if any(coding.strip().lower() not in (b"", b"identity") for coding in headers.content_encoding.split(b",")):
        return "a content coding is not accepted: send the JSON-RPC message as it is (Content-Encoding: identity)"
    media_type, _, parameters = (headers.content_type or b"").partition(b";")
    if media_type.strip().lower() != b"application/json":
        return "Content-Type must be application/json"
    for parameter in parameters.split(b";"):
        name, _, value = parameter.partition(b"=")
        if name.strip().lower() == b"charset" and value.strip().strip(b'"').lower() != b"utf-8":
            return "the JSON-RPC message must be UTF-8 (RFC 8259 §8.1): no other charset is accepted"
    return None


class BodyRefused(Enum):
    """Why a request body was not read whole: (HTTP status, message) for the answer, or the client left."""

    TOO_LARGE = (413, "request body too large")  # RFC 9110 §15.5.14
    TOO_SLOW = (408, "request body did not arrive in time")  # RFC 9110 §15.5.9, [limits] body_timeout
    GONE = (0, "")  # the client disconnected mid-body: nothing is decided on half a message


async def read_body(receive: Receive, deadline: float) -> bytes | BodyRefused:
    """The whole body, counted against the cap as it arrives and read before ``deadline`` (loop time)."""
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout_at(deadline):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return BodyRefused.GONE
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > MAX_REQUEST_BODY:
                    return BodyRefused.TOO_LARGE
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
    except TimeoutError:
        return BodyRefused.TOO_SLOW


async def read_message(method: str, send: Send, body: bytes, headers: RequestHeaders, *,
                       doubles: bool = False) -> McpMessage | Answered | None:
    """A POST's one well-formed JSON-RPC message, sent as UTF-8 JSON (else its JSON-RPC error, sent); None for GET and
    DELETE, which carry no body here (one would go upstream undecided). ``doubles``: the upstream may read numbers as
    doubles (``servers.NAME.big_integers = "refuse"``)."""
    if method != "POST":
        if body:
            await send_json(send, 400, jsonrpc_error(JSONRPC_INVALID_REQUEST, f"a {method} request carries no body"))
            return ANSWERED
        return None
    problem = representation_problem(headers)
    if problem is not None:
        await send_json(send, 415, jsonrpc_error(JSONRPC_INVALID_REQUEST, problem), [(b"accept-encoding", b"identity")])
        return ANSWERED
    try:
        return parse_message(body, doubles=doubles)
    except JsonRpcRefused as refused:
        await send_json(send, refused.status, refused.response())
        return ANSWERED
