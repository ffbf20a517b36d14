"""Strict parsing and classification of the one JSON-RPC message in an MCP POST body.

MCP Streamable HTTP (2026-07-28): a POST carries exactly one JSON-RPC 2.0 message —
a request, a notification or a response (batching was removed in 2025-06-18). Before
anything is forwarded, the gateway parses that message here, and parses it so that no
later reader can see something else in the same bytes (:mod:`deputy.gateway.strict_json`):
bytes that are not UTF-8 JSON, or JSON whose reading differs between readers (duplicate
keys, lone surrogates, nesting beyond :data:`MAX_DEPTH`), are a parse error (-32700). A
number Deputy cannot hold exactly as its digits say (an integer beyond signed 64 bits, a
fraction whose double is another number, negative zero) is invalid params (-32602) inside
``params`` and an invalid request (-32600) elsewhere, with the id echoed.

A well-formed document that is not one JSON-RPC
2.0 message — an array (a batch), ``"jsonrpc"`` other than ``"2.0"``, a request id that
is null, boolean or fractional, a response with both or neither of ``result`` and
``error`` — is an invalid request (-32600). A known MCP method whose params do not
have the shape MCP defines (``tools/call`` without a tool name, non-object
``arguments``, a resource URI not in its normal form: :mod:`deputy.gateway.resource_uris`, ...) is invalid
params (-32602).

The happy path is one ``json`` decode plus a few dict lookups.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, NoReturn

from deputy.gateway.resource_uris import uri_problem
from deputy.gateway.responses import JSONRPC_INVALID_REQUEST, JSONRPC_PARSE_ERROR, jsonrpc_error
from deputy.gateway.strict_json import MAX_DEPTH, InexactNumber, NotJson, read_json

JSONRPC_INVALID_PARAMS = -32602

__all__ = ["MAX_DEPTH", "Category", "JsonRpcRefused", "Kind", "McpMessage", "Operation", "classify",
           "parse_message"]


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
    COMPLETION = "completion"  # completion/complete: argument values of one prompt or resource (template)
    HOUSEKEEPING = "housekeeping"  # initialize, ping, notifications/*, logging/setLevel, ...
    RESPONSE = "response"  # the client answering a server request (sampling, elicitation, roots)
    UNKNOWN = "unknown"  # any other method


LIST_METHODS = frozenset({"tools/list", "resources/list", "resources/templates/list", "prompts/list"})
# server/discover is the 2026-07-28 replacement for initialize-time negotiation.
HOUSEKEEPING_METHODS = frozenset({"initialize", "ping", "logging/setLevel", "server/discover"})
COMPLETION_REFS = {"ref/prompt": "name", "ref/resource": "uri"}  # MCP completion: the reference types, their key


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

    `name` is the tool or prompt name, `uri` the resource read (or, for a completion, the resource or URI
    template whose argument is completed); `arguments` are the tools/call or prompts/get arguments (empty when
    absent). Nothing else is set.
    """

    category: Category
    name: str | None = None
    uri: str | None = None
    arguments: dict[str, Any] = field(default_factory=dict)

    @property
    def target(self) -> str | None:
        """What the operation is on: the tool or prompt name, else the resource's URI (or URI template)."""
        return self.name if self.name is not None else self.uri


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


def _decode(body: bytes, doubles: bool) -> Any:
    try:
        return read_json(body, doubles=doubles)
    except NotJson as refused:
        _refuse(JSONRPC_PARSE_ERROR, refused.message)
    except InexactNumber as number:
        document = number.document
        message_id = document.get("id") if type(document) is dict else None
        echo = message_id if type(message_id) is str or type(message_id) is int else None
        in_params = number.pointer.startswith("/params/") and type(document) is dict and "method" in document
        _refuse(JSONRPC_INVALID_PARAMS if in_params else JSONRPC_INVALID_REQUEST, number.message, echo)


def parse_message(body: bytes, *, doubles: bool = False) -> McpMessage:
    """Parse and classify one POSTed MCP message, or raise :class:`JsonRpcRefused`. ``doubles``: its upstream may
    read numbers as doubles (:func:`~deputy.gateway.strict_json.read_json`)."""
    document = _decode(body, doubles)
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
        _check_uri(method, uri, request_id)
        return Operation(Category.RESOURCE_READ, uri=uri)
    if method == "prompts/get":
        fields = _params_object(method, params, request_id)
        name = fields.get("name")
        if type(name) is not str or not name:
            _refuse(JSONRPC_INVALID_PARAMS, 'prompts/get needs the prompt "name" (a non-empty string)', request_id)
        return Operation(Category.PROMPT_GET, name=name, arguments=_arguments(method, fields, request_id))
    if method == "completion/complete":
        return _completion(_params_object(method, params, request_id), request_id)
    if method in LIST_METHODS:
        _optional_params_object(method, params, request_id)
        return Operation(Category.LIST)
    if method in HOUSEKEEPING_METHODS or method.startswith("notifications/"):
        _optional_params_object(method, params, request_id)
        return Operation(Category.HOUSEKEEPING)
    return Operation(Category.UNKNOWN)


def _completion(fields: dict[str, Any], request_id: str | int | None) -> Operation:
    """MCP completion (``CompleteRequest``): ``ref`` is a ``PromptReference`` (``ref/prompt``, by ``name``) or a
    ``ResourceTemplateReference`` (``ref/resource``, by ``uri``: a URI or a URI template). Any other reference is
    refused rather than forwarded undecided: what it points at could not be decided."""
    ref = fields.get("ref")
    ref = ref if type(ref) is dict else {}
    kind = ref.get("type")
    key = COMPLETION_REFS.get(kind) if type(kind) is str else None
    target = ref.get(key) if key is not None else None
    if type(target) is not str or not target:
        _refuse(JSONRPC_INVALID_PARAMS, 'completion/complete needs "ref": {"type": "ref/prompt", "name": ...} or '
                                        '{"type": "ref/resource", "uri": ...} (a non-empty string)', request_id)
    if key == "name":
        return Operation(Category.COMPLETION, name=target)
    if "{" not in target:  # a resource's URI, not a template's (decided as the template's exact text)
        _check_uri("completion/complete", target, request_id)
    return Operation(Category.COMPLETION, uri=target)


def _check_uri(method: str, uri: str, request_id: str | int | None) -> None:
    problem = uri_problem(uri)
    if problem is not None:
        _refuse(JSONRPC_INVALID_PARAMS, f"{method}: the resource URI {problem}; send it in its normal form "
                                        "(RFC 3986 §6.2.2), the one every reader reads alike", request_id)


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
