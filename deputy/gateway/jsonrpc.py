"""Strict parsing and classification of the one JSON-RPC message in an MCP POST body.

MCP Streamable HTTP (2026-07-28): a POST carries exactly one JSON-RPC 2.0 message —
a request, a notification or a response (batching was removed in 2025-06-18). Before
anything is forwarded, the gateway parses that message here, and parses it so that no
later reader can see something else in the same bytes:

- UTF-8 only: invalid UTF-8 and a byte order mark are refused, and so are escaped lone
  surrogates (``"\\ud800"``), which are not Unicode text at all;
- duplicate object keys are refused at any depth (RFC 8259 §4 leaves their meaning to
  the parser; one reader keeps the first, another the last, so a policy could see one
  value and the upstream another);
- ``NaN``/``Infinity``, numbers that become infinite, and integers outside the signed
  64-bit range (what a policy engine can hold exactly) are refused;
- nesting is capped at :data:`MAX_DEPTH` levels.

All of that is a parse error (-32700). A well-formed document that is not one JSON-RPC
2.0 message — an array (a batch), ``"jsonrpc"`` other than ``"2.0"``, a request id that
is null, boolean or fractional, a response with both or neither of ``result`` and
``error`` — is an invalid request (-32600). A known MCP method whose params do not
have the shape MCP defines (``tools/call`` without a tool name, non-object
``arguments``, ...) is invalid params (-32602).

The happy path is one ``json`` decode (the C scanner, calling back only per object and
per number) plus a few dict lookups; the walk that checks depth and surrogates runs only
when two cheap scans of the text say they could matter (more than MAX_DEPTH opening
brackets, or an escape that starts like a surrogate).
"""

from __future__ import annotations

import enum
import json
import math
from dataclasses import dataclass, field
from typing import Any, NoReturn

from deputy.gateway.responses import JSONRPC_INVALID_REQUEST, JSONRPC_PARSE_ERROR, jsonrpc_error

JSONRPC_INVALID_PARAMS = -32602

MAX_DEPTH = 64
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
UTF8_BOM = b"\xef\xbb\xbf"



class Kind(enum.StrEnum):
    REQUEST = "request"
    NOTIFICATION = "notification"
    RESPONSE = "response"


class Category(enum.StrEnum):
    """What a message asks for, as far as a policy is concerned."""

    TOOL_CALL = "tool_call"  # tools/call
    RESOURCE_READ = "resource_read"  # resources/read
    PROMPT_GET = "prompt_get"  # prompts/get
    LIST = "list"  # tools/list, resources/list, resources/templates/list, prompts/list
    HOUSEKEEPING = "housekeeping"  # initialize, ping, notifications/*, logging/setLevel, ...
    RESPONSE = "response"  # the client answering a server request (sampling, elicitation, roots)
    UNKNOWN = "unknown"  # any other method


LIST_METHODS = frozenset({"tools/list", "resources/list", "resources/templates/list", "prompts/list"})
# server/discover is the 2026-07-28 replacement for initialize-time negotiation.
HOUSEKEEPING_METHODS = frozenset({"initialize", "ping", "logging/setLevel", "completion/complete",
                                  "server/discover"})


class JsonRpcRefused(Exception):
    """A POST body refused before forwarding: the JSON-RPC error code, a message, and the id if it was readable."""

    status = 400

    def __init__(self, code: int, message: str, request_id: str | int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id

    def response(self) -> dict[str, Any]:
        """The JSON-RPC error response to send back (HTTP :attr:`status`)."""
        return jsonrpc_error(self.code, self.message, request_id=self.request_id)


@dataclass(frozen=True, slots=True)
class Operation:
    """The policy-relevant reading of a message.

    `name` is the tool or prompt name, `uri` the resource read; `arguments` are the
    tools/call or prompts/get arguments (empty when absent). Nothing else is set.
    """

    category: Category
    name: str | None = None
    uri: str | None = None
    arguments: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class McpMessage:
    """One parsed MCP message. `raw` is the body exactly as received: forward that, never a re-serialisation.

    `params` and the `operation`'s `arguments` are the parsed values themselves; readers must not mutate them.
    """

    kind: Kind
    method: str | None  # None for a response
    id: str | int | None  # None for a notification (and an error response without one)
    params: dict[str, Any] | list[Any] | None
    raw: bytes
    operation: Operation


def parse_message(body: bytes) -> McpMessage:
    """Parse and classify one POSTed MCP message, or raise :class:`JsonRpcRefused`."""
    document = _decode(body)
    if type(document) is not dict:
        if type(document) is list:
            _refuse(JSONRPC_INVALID_REQUEST, "JSON-RPC batches are not part of MCP (removed in 2025-06-18); "
                                             "send one message per POST")
        _refuse(JSONRPC_INVALID_REQUEST, "the body must be one JSON-RPC message object")
    message_id = document.get("id")
    echo = message_id if type(message_id) is str or type(message_id) is int else None
    if document.get("jsonrpc") != "2.0":
        _refuse(JSONRPC_INVALID_REQUEST, 'the message must have "jsonrpc": "2.0"', echo)
    method = document.get("method")
    has_id = "id" in document
    if method is None and "method" not in document:
        return _response(document, echo, has_id, body)
    if type(method) is not str:
        _refuse(JSONRPC_INVALID_REQUEST, '"method" must be a string', echo)
    if "result" in document or "error" in document:
        _refuse(JSONRPC_INVALID_REQUEST, 'a request or notification has no "result" or "error"', echo)
    if has_id and echo is None:
        _refuse(JSONRPC_INVALID_REQUEST, 'a request "id" must be a string or an integer')
    params = document.get("params")
    if params is None:
        if "params" in document:
            _refuse(JSONRPC_INVALID_REQUEST, '"params" must be an object (or an array) when present', echo)
    elif type(params) is not dict and type(params) is not list:
        _refuse(JSONRPC_INVALID_REQUEST, '"params" must be an object (or an array) when present', echo)
    return McpMessage(
        kind=Kind.REQUEST if has_id else Kind.NOTIFICATION,
        method=method,
        id=echo,
        params=params,
        raw=body,
        operation=classify(method, params, echo),
    )


def classify(method: str, params: dict[str, Any] | list[Any] | None,
             request_id: str | int | None = None) -> Operation:
    """Read what `method` with `params` asks for; refuse (-32602) params that break the shape MCP defines.

    Classification goes by the method alone, whether the message is a request or a
    notification: a ``tools/call`` sent without an id is still judged as a tool call.
    """
    if method == "tools/call":
        fields = _params_object(method, params, request_id)
        name = fields.get("name")
        if type(name) is not str or not name:
            _refuse(JSONRPC_INVALID_PARAMS, 'tools/call needs the tool "name" (a non-empty string)', request_id)
        return Operation(Category.TOOL_CALL, name=name, arguments=_arguments(method, fields, request_id))
    if method == "resources/read":
        uri = _params_object(method, params, request_id).get("uri")
        if type(uri) is not str or not uri:
            _refuse(JSONRPC_INVALID_PARAMS, 'resources/read needs the resource "uri" (a non-empty string)',
                    request_id)
        return Operation(Category.RESOURCE_READ, uri=uri)
    if method == "prompts/get":
        fields = _params_object(method, params, request_id)
        name = fields.get("name")
        if type(name) is not str or not name:
            _refuse(JSONRPC_INVALID_PARAMS, 'prompts/get needs the prompt "name" (a non-empty string)', request_id)
        return Operation(Category.PROMPT_GET, name=name, arguments=_arguments(method, fields, request_id))
    if method in LIST_METHODS:
        _optional_params_object(method, params, request_id)
        return Operation(Category.LIST)
    if method in HOUSEKEEPING_METHODS or method.startswith("notifications/"):
        _optional_params_object(method, params, request_id)
        return Operation(Category.HOUSEKEEPING)
    return Operation(Category.UNKNOWN)


def _response(document: dict[str, Any], echo: str | int | None, has_id: bool, body: bytes) -> McpMessage:
    # A refused response is answered without an id (MCP Streamable HTTP): the id is the server's, not a request's.
    has_result, has_error = "result" in document, "error" in document
    if has_result == has_error:
        _refuse(JSONRPC_INVALID_REQUEST, 'a message needs a "method", or exactly one of "result" and "error"')
    if "params" in document:
        _refuse(JSONRPC_INVALID_REQUEST, 'a response has no "params"')
    if has_result:
        if echo is None:
            _refuse(JSONRPC_INVALID_REQUEST, 'a response "id" must be a string or an integer')
        if type(document["result"]) is not dict:
            _refuse(JSONRPC_INVALID_REQUEST, '"result" must be an object')
    else:
        # An error response may lack an id, or have a null one, when the id could not be read.
        if has_id and echo is None and document["id"] is not None:
            _refuse(JSONRPC_INVALID_REQUEST, 'a response "id" must be a string or an integer')
        error = document["error"]
        if type(error) is not dict or type(error.get("code")) is not int or type(error.get("message")) is not str:
            _refuse(JSONRPC_INVALID_REQUEST, '"error" must be an object with an integer "code" and a string "message"')
    return McpMessage(kind=Kind.RESPONSE, method=None, id=echo, params=None, raw=body,
                      operation=Operation(Category.RESPONSE))


def _params_object(method: str, params: dict[str, Any] | list[Any] | None,
                   request_id: str | int | None) -> dict[str, Any]:
    if type(params) is not dict:
        _refuse(JSONRPC_INVALID_PARAMS, f'{method} needs "params" as an object', request_id)
    return params


def _optional_params_object(method: str, params: dict[str, Any] | list[Any] | None,
                            request_id: str | int | None) -> None:
    if params is not None and type(params) is not dict:
        _refuse(JSONRPC_INVALID_PARAMS, f'{method} takes "params" as an object', request_id)


def _arguments(method: str, fields: dict[str, Any], request_id: str | int | None) -> dict[str, Any]:
    if "arguments" not in fields:
        return {}
    arguments = fields["arguments"]
    if type(arguments) is not dict:
        _refuse(JSONRPC_INVALID_PARAMS, f'{method} "arguments" must be an object', request_id)
    return arguments


def _refuse(code: int, message: str, request_id: str | int | None = None) -> NoReturn:
    raise JsonRpcRefused(code, message, request_id)


# --- bytes to a JSON value ---


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        seen: set[str] = set()
        for key, _value in pairs:
            if key in seen:
                _refuse(JSONRPC_PARSE_ERROR, f"duplicate key {json.dumps(key[:64])} in a JSON object")
            seen.add(key)
    return document


def _constant(name: str) -> NoReturn:
    _refuse(JSONRPC_PARSE_ERROR, f"{name} is not a JSON number")


def _integer(text: str) -> int:
    if len(text) < 19:  # 18 digits, or a sign and 17, always fit
        return int(text)
    value = int(text) if len(text) <= 20 else None  # never convert thousands of digits
    if value is None or value < INT64_MIN or value > INT64_MAX:
        _refuse(JSONRPC_PARSE_ERROR, "integer out of the signed 64-bit range")
    return value


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        _refuse(JSONRPC_PARSE_ERROR, "number too large to represent")
    return value


_DECODER = json.JSONDecoder(object_pairs_hook=_object, parse_constant=_constant, parse_int=_integer,
                            parse_float=_float)


def _decode(body: bytes) -> Any:
    if body.startswith(UTF8_BOM):
        _refuse(JSONRPC_PARSE_ERROR, "the body must be UTF-8 without a byte order mark")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        _refuse(JSONRPC_PARSE_ERROR, "the body is not valid UTF-8")
    try:
        document = _DECODER.decode(text)
    except RecursionError:
        _refuse(JSONRPC_PARSE_ERROR, f"JSON nested deeper than {MAX_DEPTH} levels")
    except ValueError:  # json.JSONDecodeError, and int() refusing thousands of digits
        _refuse(JSONRPC_PARSE_ERROR, "the body is not valid JSON")
    if type(document) is dict or type(document) is list:
        if text.count("{") + text.count("[") > MAX_DEPTH:
            _check_depth(document)
        if "\\ud" in text or "\\uD" in text:
            _check_surrogates(document)
    return document


def _check_depth(document: dict[str, Any] | list[Any]) -> None:
    """Refuse nesting beyond MAX_DEPTH, one level at a time (no recursion)."""
    level: list[Any] = [document]
    depth = 1
    while level:
        if depth > MAX_DEPTH:
            _refuse(JSONRPC_PARSE_ERROR, f"JSON nested deeper than {MAX_DEPTH} levels")
        level = [child for node in level for child in (node.values() if type(node) is dict else node)
                 if type(child) is dict or type(child) is list]
        depth += 1


def _check_surrogates(document: dict[str, Any] | list[Any]) -> None:
    """Refuse strings holding a lone surrogate (escaped in the JSON text, so valid UTF-8 but not Unicode)."""
    stack: list[Any] = [document]
    while stack:
        node = stack.pop()
        if type(node) is dict:
            texts = [*node, *(value for value in node.values() if type(value) is str)]
            stack.extend(value for value in node.values() if type(value) is dict or type(value) is list)
        else:
            texts = [value for value in node if type(value) is str]
            stack.extend(value for value in node if type(value) is dict or type(value) is list)
        for text in texts:
            if not text.isascii():
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError:
                    _refuse(JSONRPC_PARSE_ERROR, "a string holds a lone surrogate (not Unicode text)")
