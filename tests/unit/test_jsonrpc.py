"""Strict parsing and classification of one POSTed MCP message (deputy.gateway.jsonrpc).

Every refusal carries its JSON-RPC code: -32700 for bytes that are not (faithfully
parseable) JSON, -32600 for JSON that is not one JSON-RPC 2.0 message, -32602 for known
MCP methods with params of the wrong shape. Numbers: tests/unit/test_jsonrpc_numbers.py;
properties (Hypothesis): tests/unit/test_jsonrpc_props.py.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from deputy.gateway.jsonrpc import (
    MAX_DEPTH,
    Category,
    JsonRpcRefused,
    Kind,
    Operation,
    classify,
    parse_message,
)
from tests.support.jsonrpc_bodies import INVALID_PARAMS, INVALID_REQUEST, PARSE_ERROR, call, refusal


def nested(depth: int) -> str:
    """Arguments text whose innermost object sits `depth` levels below the message object."""
    # message (1) > params (2) > arguments (3) > ...
    inner = "{}"
    for _ in range(depth - 3):
        inner = f'{{"a":{inner}}}'
    return inner


# --- parse errors (-32700) ---

@pytest.mark.parametrize("body", [
    pytest.param(b"", id="empty"),
    pytest.param(b"   \n", id="whitespace only"),
    pytest.param(b"not json", id="not json"),
    pytest.param(b'{"jsonrpc":"2.0","id":1,"method":"ping"', id="truncated"),
    pytest.param(b'{"jsonrpc":"2.0","id":1,"method":"ping"}{}', id="trailing data"),
    pytest.param(b"{'jsonrpc':'2.0','id':1,'method':'ping'}", id="single quotes"),
    pytest.param(b'{"jsonrpc":"2.0","id":1,"method":"ping",}', id="trailing comma"),
    pytest.param(call('{"text":"a\nb"}'), id="raw control character in a string"),
    pytest.param(call('{"text":"X"}').replace(b"X", b"\xff"), id="invalid utf-8 byte"),
    pytest.param(call('{"text":"X"}').replace(b"X", b"\xc0\xaf"), id="overlong utf-8"),
    pytest.param(call('{"text":"X"}').replace(b"X", b"\xed\xa0\x80"), id="utf-8 encoded surrogate"),
    pytest.param(call('{"text":"X"}').replace(b"X", b"\xe2\x82"), id="truncated utf-8 sequence"),
    pytest.param(b"\xef\xbb\xbf" + call('{"text":"x"}'), id="utf-8 byte order mark"),
    pytest.param(call('{"text":"x"}').decode().encode("utf-16"), id="utf-16"),
    pytest.param(call('{"text":"x"}').decode().encode("utf-32-le"), id="utf-32 without bom"),
    pytest.param(call('{"n":NaN}'), id="NaN"),
    pytest.param(call('{"n":Infinity}'), id="Infinity"),
    pytest.param(call('{"n":-Infinity}'), id="-Infinity"),
    pytest.param(call('{"text":"\\ud800"}'), id="lone high surrogate"),
    pytest.param(call('{"text":"\\uDC00x"}'), id="lone low surrogate"),
    pytest.param(call('{"\\ud83d":"key with lone surrogate"}'), id="surrogate in a key"),
    pytest.param(call('{"list":["ok",["\\ude00"]]}'), id="surrogate in a nested array"),
    pytest.param(call('{"text":"\\ude00\\ud83d"}'), id="surrogates in the wrong order"),
    pytest.param(call(nested(MAX_DEPTH + 1)), id="one level too deep"),
    pytest.param(call("[" * 70 + "]" * 70), id="arrays too deep"),
    pytest.param(b"[" * 100_000 + b"]" * 100_000, id="deep enough to exhaust a recursive parser"),
    pytest.param(b'{"a":' * 50_000 + b"1" + b"}" * 50_000, id="deep objects"),
])
def test_parse_errors(body: bytes) -> None:
    refused = refusal(body)
    assert refused.code == PARSE_ERROR, refused.message
    assert refused.request_id is None
    assert refused.response() == {"jsonrpc": "2.0", "id": None,
                                  "error": {"code": PARSE_ERROR, "message": refused.message}}


@pytest.mark.parametrize("arguments", [
    pytest.param('{"text":"a","text":"b"}', id="in arguments"),
    pytest.param('{"text":"a","text":"a"}', id="same value twice"),
    pytest.param('{"o":{"p":{"q":[{"r":{"s":1,"t":2,"s":3}}]}}}', id="deep inside arguments"),
    pytest.param('{"list":[{},{"k":1,"k":{}}]}', id="in an object inside an array"),
])
def test_duplicate_keys_in_arguments_are_parse_errors(arguments: str) -> None:
    refused = refusal(call(arguments))
    assert refused.code == PARSE_ERROR
    assert "duplicate key" in refused.message


def test_duplicate_keys_in_the_envelope_are_parse_errors() -> None:
    for body in (b'{"jsonrpc":"2.0","id":1,"id":2,"method":"ping"}',
                 b'{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","name":"delete_user"}}',
                 b'{"jsonrpc":"2.0","jsonrpc":"2.0","method":"notifications/initialized"}'):
        assert refusal(body).code == PARSE_ERROR, body


def test_the_depth_limit_is_inclusive() -> None:
    """MAX_DEPTH levels parse; the next level is refused (see the parametrized case above)."""
    message = parse_message(call(nested(MAX_DEPTH)))
    depth, value = 3, message.operation.arguments
    while value:
        value, depth = value["a"], depth + 1
    assert depth == MAX_DEPTH


def test_many_brackets_without_depth_are_fine() -> None:
    rows = ",".join(f'{{"i":{i},"v":[1,2]}}' for i in range(500))
    message = parse_message(call(f'{{"rows":[{rows}]}}'))
    assert len(message.operation.arguments["rows"]) == 500


def test_escaped_surrogate_pairs_and_utf8_text_parse() -> None:
    arguments = '{"a":"\\ud83d\\ude00","b":"\\uD83D\\uDE00","c":"\xe9\u4e2d\U0001f600","d":"\\ud7ff"}'
    message = parse_message(call(arguments))
    assert message.operation.arguments == {"a": "\U0001f600", "b": "\U0001f600", "c": "é中\U0001f600",
                                           "d": "\ud7ff"}


# --- invalid requests (-32600) ---

@pytest.mark.parametrize(("body", "echoed"), [
    pytest.param(b"[]", None, id="empty batch"),
    pytest.param(b'[{"jsonrpc":"2.0","id":1,"method":"ping"}]', None, id="batch of one"),
    pytest.param(b'"ping"', None, id="a string"),
    pytest.param(b"1", None, id="a number"),
    pytest.param(b"null", None, id="null"),
    pytest.param(b"true", None, id="true"),
    pytest.param(b'{"id":1,"method":"ping"}', 1, id="no jsonrpc member"),
    pytest.param(b'{"jsonrpc":"1.0","id":"a","method":"ping"}', "a", id="jsonrpc 1.0"),
    pytest.param(b'{"jsonrpc":2.0,"id":1,"method":"ping"}', 1, id="jsonrpc as a number"),
    pytest.param(b'{"jsonrpc":"2.0 ","id":1,"method":"ping"}', 1, id="jsonrpc with a space"),
    pytest.param(b'{"jsonrpc":"2.0","id":1,"method":1}', 1, id="method a number"),
    pytest.param(b'{"jsonrpc":"2.0","id":1,"method":null}', 1, id="method null"),
    pytest.param(b'{"jsonrpc":"2.0","id":1,"method":["ping"]}', 1, id="method an array"),
    pytest.param(b'{"jsonrpc":"2.0","id":null,"method":"ping"}', None, id="request id null"),
    pytest.param(b'{"jsonrpc":"2.0","id":true,"method":"ping"}', None, id="request id true"),
    pytest.param(b'{"jsonrpc":"2.0","id":1.0,"method":"ping"}', None, id="request id 1.0"),
    pytest.param(b'{"jsonrpc":"2.0","id":1.5,"method":"ping"}', None, id="request id fractional"),
    pytest.param(b'{"jsonrpc":"2.0","id":{},"method":"ping"}', None, id="request id an object"),
    pytest.param(b'{"jsonrpc":"2.0","id":[1],"method":"ping"}', None, id="request id an array"),
    pytest.param(b'{"jsonrpc":"2.0","id":1,"method":"ping","result":{}}', 1, id="request with a result"),
    pytest.param(b'{"jsonrpc":"2.0","method":"ping","error":{"code":1,"message":"m"}}', None,
                 id="notification with an error"),
    pytest.param(b'{"jsonrpc":"2.0","id":1,"method":"x","params":"a"}', 1, id="params a string"),
    pytest.param(b'{"jsonrpc":"2.0","id":1,"method":"x","params":1}', 1, id="params a number"),
    pytest.param(b'{"jsonrpc":"2.0","id":1,"method":"x","params":null}', 1, id="params null"),
    pytest.param(b'{"jsonrpc":"2.0","method":"x","params":true}', None, id="notification params true"),
    pytest.param(b'{"jsonrpc":"2.0","id":1}', None, id="neither method nor result nor error"),
    pytest.param(b'{"jsonrpc":"2.0"}', None, id="only jsonrpc"),
    pytest.param(b'{"jsonrpc":"2.0","id":1,"result":{},"error":{"code":1,"message":"m"}}', None,
                 id="both result and error"),
    pytest.param(b'{"jsonrpc":"2.0","result":{}}', None, id="result without id"),
    pytest.param(b'{"jsonrpc":"2.0","id":null,"result":{}}', None, id="result with null id"),
    pytest.param(b'{"jsonrpc":"2.0","id":false,"result":{}}', None, id="result with boolean id"),
    pytest.param(b'{"jsonrpc":"2.0","id":1,"result":[]}', None, id="result an array"),
    pytest.param(b'{"jsonrpc":"2.0","id":1,"result":"ok"}', None, id="result a string"),
    pytest.param(b'{"jsonrpc":"2.0","id":1,"result":{},"params":{}}', None, id="response with params"),
    pytest.param(b'{"jsonrpc":"2.0","id":1,"error":"bad"}', None, id="error a string"),
    pytest.param(b'{"jsonrpc":"2.0","id":1,"error":{"message":"m"}}', None, id="error without code"),
    pytest.param(b'{"jsonrpc":"2.0","id":1,"error":{"code":1.5,"message":"m"}}', None, id="error code fractional"),
    pytest.param(b'{"jsonrpc":"2.0","id":1,"error":{"code":true,"message":"m"}}', None, id="error code boolean"),
    pytest.param(b'{"jsonrpc":"2.0","id":1,"error":{"code":1}}', None, id="error without message"),
    pytest.param(b'{"jsonrpc":"2.0","id":1.5,"error":{"code":1,"message":"m"}}', None,
                 id="error with fractional id"),
])
def test_invalid_requests(body: bytes, echoed: str | int | None) -> None:
    """The id is echoed when a request's could be read; never for a refused response (its id is the server's)."""
    refused = refusal(body)
    assert refused.code == INVALID_REQUEST, refused.message
    assert refused.request_id == echoed
    assert refused.response()["id"] == echoed
    assert refused.response()["error"]["code"] == INVALID_REQUEST


def test_a_batch_is_refused_as_not_part_of_mcp() -> None:
    refused = refusal(b'[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","id":2,"method":"ping"}]')
    assert refused.code == INVALID_REQUEST
    assert "batch" in refused.message
    assert "not part of MCP" in refused.message


# --- invalid params (-32602) ---

@pytest.mark.parametrize("params", [
    pytest.param(None, id="tools/call without params"),
    pytest.param([], id="params an array"),
    pytest.param({}, id="no name"),
    pytest.param({"arguments": {"text": "x"}}, id="arguments but no name"),
    pytest.param({"name": None}, id="name null"),
    pytest.param({"name": 3}, id="name a number"),
    pytest.param({"name": ""}, id="name empty"),
    pytest.param({"name": ["echo"]}, id="name an array"),
    pytest.param({"name": "echo", "arguments": ["x"]}, id="arguments an array"),
    pytest.param({"name": "echo", "arguments": "x"}, id="arguments a string"),
    pytest.param({"name": "echo", "arguments": None}, id="arguments null"),
    pytest.param({"name": "echo", "arguments": 1}, id="arguments a number"),
])
def test_malformed_tool_calls_are_invalid_params(params: Any) -> None:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": "call-3", "method": "tools/call"}
    if params is not None:
        message["params"] = params
    refused = refusal(json.dumps(message).encode())
    assert refused.code == INVALID_PARAMS, refused.message
    assert refused.request_id == "call-3"
    assert refused.response() == {"jsonrpc": "2.0", "id": "call-3",
                                  "error": {"code": INVALID_PARAMS, "message": refused.message}}


@pytest.mark.parametrize(("method", "params"), [
    ("resources/read", None),
    ("resources/read", {}),
    ("resources/read", {"uri": 1}),
    ("resources/read", {"uri": ""}),
    ("resources/read", ["demo://readme"]),
    ("prompts/get", None),
    ("prompts/get", {"arguments": {"name": "x"}}),
    ("prompts/get", {"name": 1}),
    ("prompts/get", {"name": "greet", "arguments": ["x"]}),
    ("tools/list", []),
    ("prompts/list", ["cursor"]),
    ("initialize", []),
    ("notifications/initialized", [1]),
])
def test_other_known_methods_with_malformed_params_are_invalid_params(method: str, params: Any) -> None:
    message: dict[str, Any] = {"jsonrpc": "2.0", "id": 4, "method": method}
    if params is not None:
        message["params"] = params
    refused = refusal(json.dumps(message).encode())
    assert refused.code == INVALID_PARAMS, refused.message
    assert refused.request_id == 4


def test_a_tool_call_sent_as_a_notification_is_still_judged_as_a_tool_call() -> None:
    """Classification goes by method: dropping the id must not turn a tool call into something unchecked."""
    message = parse_message(b'{"jsonrpc":"2.0","method":"tools/call","params":{"name":"delete_user",'
                            b'"arguments":{"id":1}}}')
    assert message.kind is Kind.NOTIFICATION
    assert message.operation == Operation(Category.TOOL_CALL, name="delete_user", arguments={"id": 1})
    refused = refusal(b'{"jsonrpc":"2.0","method":"tools/call","params":{"arguments":{}}}')
    assert refused.code == INVALID_PARAMS
    assert refused.request_id is None


# --- accepted messages ---

def test_a_tool_call() -> None:
    body = b' {"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"add","arguments":{"a":1,"b":2},' \
           b'"_meta":{"progressToken":"p"}}}\n'
    message = parse_message(body)
    assert message.kind is Kind.REQUEST
    assert message.method == "tools/call"
    assert message.id == 42
    assert message.params == {"name": "add", "arguments": {"a": 1, "b": 2}, "_meta": {"progressToken": "p"}}
    assert message.raw is body
    assert message.operation == Operation(Category.TOOL_CALL, name="add", arguments={"a": 1, "b": 2})


def test_a_tool_call_without_arguments_has_empty_arguments() -> None:
    message = parse_message(b'{"jsonrpc":"2.0","id":"x","method":"tools/call","params":{"name":"list_users"}}')
    assert message.id == "x"
    assert message.operation == Operation(Category.TOOL_CALL, name="list_users", arguments={})


def test_resources_read_and_prompts_get() -> None:
    read = parse_message(b'{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"uri":"demo://readme"}}')
    assert read.operation == Operation(Category.RESOURCE_READ, uri="demo://readme")
    prompt = parse_message(b'{"jsonrpc":"2.0","id":2,"method":"prompts/get",'
                           b'"params":{"name":"greet","arguments":{"name":"Ada"}}}')
    assert prompt.operation == Operation(Category.PROMPT_GET, name="greet", arguments={"name": "Ada"})
    bare = parse_message(b'{"jsonrpc":"2.0","id":3,"method":"prompts/get","params":{"name":"greet"}}')
    assert bare.operation == Operation(Category.PROMPT_GET, name="greet", arguments={})


@pytest.mark.parametrize(("method", "category"), [
    ("tools/list", Category.LIST),
    ("resources/list", Category.LIST),
    ("resources/templates/list", Category.LIST),
    ("prompts/list", Category.LIST),
    ("initialize", Category.HOUSEKEEPING),
    ("ping", Category.HOUSEKEEPING),
    ("logging/setLevel", Category.HOUSEKEEPING),
    ("server/discover", Category.HOUSEKEEPING),
    ("notifications/initialized", Category.HOUSEKEEPING),
    ("notifications/cancelled", Category.HOUSEKEEPING),
    ("resources/subscribe", Category.UNKNOWN),
    ("tasks/get", Category.UNKNOWN),
    ("tools/delete", Category.UNKNOWN),
    ("Tools/Call", Category.UNKNOWN),
    ("notifications", Category.UNKNOWN),
])
def test_classification(method: str, category: Category) -> None:
    request = parse_message(json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": {}}).encode())
    assert request.operation == Operation(category)
    assert classify(method, None) == Operation(category)


def test_a_completion_is_classified_by_what_it_completes() -> None:
    prompt = parse_message(b'{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":'
                           b'{"type":"ref/prompt","name":"greet"},"argument":{"name":"name","value":"A"}}}')
    assert prompt.operation == Operation(Category.COMPLETION, name="greet")
    assert prompt.operation.target == "greet"
    template = classify("completion/complete", {"ref": {"type": "ref/resource", "uri": "demo://users/{id}"}})
    assert template == Operation(Category.COMPLETION, uri="demo://users/{id}")
    assert template.target == "demo://users/{id}"


@pytest.mark.parametrize("params", [
    None, [], {}, {"ref": None}, {"ref": "greet"}, {"ref": {}}, {"ref": {"type": "ref/tool", "name": "x"}},
    {"ref": {"type": "ref/prompt", "uri": "x"}}, {"ref": {"type": "ref/resource", "name": "x"}},
    {"ref": {"type": "ref/prompt", "name": ""}}, {"ref": {"type": "ref/prompt", "name": 1}},
    {"ref": {"type": ["ref/prompt"], "name": "x"}},
])
def test_a_completion_of_nothing_decidable_is_invalid_params(params: Any) -> None:
    with pytest.raises(JsonRpcRefused) as refused:
        classify("completion/complete", params, 9)
    assert refused.value.code == -32602 and refused.value.request_id == 9


def test_notifications() -> None:
    message = parse_message(b'{"jsonrpc":"2.0","method":"notifications/initialized"}')
    assert message.kind is Kind.NOTIFICATION
    assert message.id is None
    assert message.params is None
    assert message.operation.category is Category.HOUSEKEEPING


def test_unknown_methods_may_use_positional_params() -> None:
    message = parse_message(b'{"jsonrpc":"2.0","id":-5,"method":"x/y","params":[1,"two",{"3":null}]}')
    assert message.id == -5
    assert message.params == [1, "two", {"3": None}]
    assert message.operation == Operation(Category.UNKNOWN)


@pytest.mark.parametrize(("body", "echoed"), [
    (b'{"jsonrpc":"2.0","id":7,"result":{"roots":[]}}', 7),
    (b'{"jsonrpc":"2.0","id":"s-1","result":{}}', "s-1"),
    (b'{"jsonrpc":"2.0","id":7,"error":{"code":-32601,"message":"no","data":{"x":1}}}', 7),
    (b'{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse"}}', None),
    (b'{"jsonrpc":"2.0","error":{"code":-32700,"message":"parse"}}', None),
])
def test_responses(body: bytes, echoed: str | int | None) -> None:
    message = parse_message(body)
    assert message.kind is Kind.RESPONSE
    assert message.method is None
    assert message.id == echoed
    assert message.params is None
    assert message.operation == Operation(Category.RESPONSE)


def test_unknown_top_level_members_are_tolerated() -> None:
    message = parse_message(b'{"jsonrpc":"2.0","id":1,"method":"ping","extension":{"a":1}}')
    assert message.operation.category is Category.HOUSEKEEPING
