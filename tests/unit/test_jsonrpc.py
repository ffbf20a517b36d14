"""Strict parsing and classification of one POSTed MCP message (deputy.gateway.jsonrpc).

Every refusal carries its JSON-RPC code: -32700 for bytes that are not (faithfully
parseable) JSON, -32600 for JSON that is not one JSON-RPC 2.0 message, -32602 for known
MCP methods with params of the wrong shape. Hypothesis checks that a duplicate key
anywhere is refused and that valid messages come back as sent.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from deputy.gateway.jsonrpc import (
    MAX_DEPTH,
    Category,
    JsonRpcRefused,
    Kind,
    McpMessage,
    Operation,
    classify,
    parse_message,
)

PARSE_ERROR, INVALID_REQUEST, INVALID_PARAMS = -32700, -32600, -32602


def refusal(body: bytes) -> JsonRpcRefused:
    with pytest.raises(JsonRpcRefused) as caught:
        parse_message(body)
    return caught.value


def call(arguments: str, request_id: str = "1") -> bytes:
    """A tools/call of "echo" with the given arguments JSON text, as UTF-8."""
    return (f'{{"jsonrpc":"2.0","id":{request_id},"method":"tools/call",'
            f'"params":{{"name":"echo","arguments":{arguments}}}}}').encode()


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


@pytest.mark.parametrize(("text", "value"), [
    ("9223372036854775807", 2**63 - 1),
    ("-9223372036854775808", -(2**63)),
    ("9007199254740993", 2**53 + 1),
    ("123456789012345678", 123456789012345678),
    ("0", 0),
    ("0.0", 0.0),
    ("0e7", 0.0),
    ("1e308", 1e308),
    ("1E+2", 100.0),
    ("1.50", 1.5),
    ("0.1", 0.1),
    ("5e-324", 5e-324),
    ("1.7976931348623157e308", 1.7976931348623157e308),
    ("100000000000000000000.0", 1e20),
])
def test_numbers_held_exactly_parse(text: str, value: float) -> None:
    """Each of these is held as exactly the number its digits say (1.50 is the decimal 1.5; 1e20 is a double)."""
    number = parse_message(call(f'{{"n":{text}}}')).operation.arguments["n"]
    assert number == value
    assert type(number) is type(value)


# --- numbers Deputy cannot hold as their digits say: -32602 in params, -32600 elsewhere, id echoed ---

@pytest.mark.parametrize(("text", "reason"), [
    pytest.param("1e400", "too large for a double", id="float overflowing to infinity"),
    pytest.param("-1E+999", "too large for a double", id="negative float overflowing"),
    pytest.param("9" * 400 + ".5", "too large for a double", id="400-digit float"),
    pytest.param("9223372036854775808", "64-bit", id="int64 max + 1"),
    pytest.param("-9223372036854775809", "64-bit", id="int64 min - 1"),
    pytest.param("1" * 5000, "64-bit", id="5000-digit integer"),
    pytest.param("1e-400", "reads as the double 0.0", id="underflow to zero"),
    pytest.param("0.10000000000000001", "reads as the double 0.1", id="more digits than a double holds"),
    pytest.param("0.1000000000000000000000000001", "reads as the double 0.1", id="28 digits"),
    pytest.param("9007199254740993.0", "reads as the double 9007199254740992.0", id="2^53 + 1 as a fraction"),
    pytest.param("9007199254740993e0", "reads as the double 9007199254740992.0", id="2^53 + 1 with an exponent"),
    pytest.param("1e-99999999999999999999", "reads as the double 0.0", id="exponent beyond Decimal"),
    pytest.param("-0", "negative zero", id="negative zero integer"),
    pytest.param("-0.0", "negative zero", id="negative zero float"),
    pytest.param("-0e5", "negative zero", id="negative zero with an exponent"),
    pytest.param("-1e-400", "reads as the double -0.0", id="negative underflow"),
])
def test_numbers_not_held_exactly_are_invalid_params(text: str, reason: str) -> None:
    refused = refusal(call(f'{{"ok":1.5,"list":[0,{{"n":{text}}}]}}', request_id='"r-1"'))
    assert refused.code == INVALID_PARAMS, refused.message
    assert refused.request_id == "r-1"
    assert refused.message.startswith("the number at /params/arguments/list/1/n ")
    assert reason in refused.message


def test_the_first_inexact_number_is_named_by_its_json_pointer() -> None:
    refused = refusal(call('{"a/b":{"~c":[1,-0]},"z":1e400}', request_id="7"))
    assert (refused.code, refused.request_id) == (INVALID_PARAMS, 7)
    assert refused.message.startswith("the number at /params/arguments/a~1b/~0c/1 (-0) is negative zero")


@pytest.mark.parametrize(("body", "echoed"), [
    pytest.param(call("{}", "18446744073709551616"), None, id="huge id"),
    pytest.param(call("{}", "-0"), None, id="negative zero id"),
    pytest.param(b'{"jsonrpc":"2.0","id":3,"result":{"n":1e-400}}', 3, id="in a response result"),
    pytest.param(b'{"jsonrpc":"2.0","id":"x","method":"ping","extra":-0.0}', "x", id="outside params"),
    pytest.param(b"1e400", None, id="the whole body"),
])
def test_numbers_not_held_exactly_outside_params_are_invalid_requests(body: bytes, echoed: str | int | None) -> None:
    refused = refusal(body)
    assert (refused.code, refused.request_id) == (INVALID_REQUEST, echoed), refused.message
    assert refused.message.startswith("the number at ")


def test_a_parse_error_after_an_inexact_number_is_still_a_parse_error() -> None:
    assert refusal(call('{"n":1e400,"m":1,"m":2}')).code == PARSE_ERROR
    assert refusal(call('{"n":1e400,') + b"garbage").code == PARSE_ERROR


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


# --- properties ---

_keys = st.text(max_size=8)
_scalars = (st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1)
            | st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: x != 0 or str(x)[0] != "-")
            | st.text(max_size=12))
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=4),
                       max_leaves=24)


class _Pairs(list[tuple[str, Any]]):
    """An object written as its list of members, so that it can hold one key twice."""


def _encode(value: Any, ensure_ascii: bool) -> str:
    if isinstance(value, _Pairs):
        return "{" + ",".join(json.dumps(k, ensure_ascii=ensure_ascii) + ":" + _encode(v, ensure_ascii)
                              for k, v in value) + "}"
    if isinstance(value, dict):
        return _encode(_Pairs(value.items()), ensure_ascii)
    if isinstance(value, list):
        return "[" + ",".join(_encode(v, ensure_ascii) for v in value) + "]"
    return json.dumps(value, ensure_ascii=ensure_ascii)


_documents = st.dictionaries(_keys, _values, max_size=4) | st.tuples(
    st.lists(_values, max_size=3), st.dictionaries(_keys, _values, max_size=3)).map(lambda t: [*t[0], t[1]])


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), arguments=st.dictionaries(_keys, _values, max_size=5), ensure_ascii=st.booleans(),
       where=st.sampled_from(["arguments", "envelope", "anything"]))
def test_a_duplicate_key_anywhere_is_refused(data: st.DataObject, arguments: dict[str, Any], ensure_ascii: bool,
                                             where: str) -> None:
    """Take a JSON document, repeat one key of any one of its objects (with any value): refused with -32700."""
    if where == "arguments":
        document: Any = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                         "params": {"name": "echo", "arguments": arguments}}
    elif where == "envelope":
        document = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "echo"}}
    else:
        document = data.draw(_documents, label="document")
    if isinstance(document, dict):
        document = _Pairs(document.items())
    objects = _collect(document)
    target = data.draw(st.sampled_from(objects), label="object")
    if target:
        key = data.draw(st.sampled_from([k for k, _ in target]), label="key")
    else:
        key = data.draw(_keys, label="key")
        target.append((key, data.draw(_values, label="first value")))
    target.insert(data.draw(st.integers(0, len(target)), label="position"), (key, data.draw(_values, label="value")))
    refused = refusal(_encode(document, ensure_ascii).encode())
    assert refused.code == PARSE_ERROR
    assert "duplicate key" in refused.message


def _collect(value: Any) -> list[_Pairs]:
    """Convert every dict below `value` into _Pairs in place and return all objects, `value` included."""
    found: list[_Pairs] = []
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, _Pairs):
            found.append(node)
            for index, (k, v) in enumerate(node):
                if isinstance(v, dict):
                    node[index] = (k, _Pairs(v.items()))
                stack.append(node[index][1])
        elif isinstance(node, dict):
            raise AssertionError("dicts are converted by their parent")
        elif isinstance(node, list):
            for index, v in enumerate(node):
                if isinstance(v, dict):
                    node[index] = _Pairs(v.items())
                stack.append(node[index])
    return found


_ids = st.text(max_size=10) | st.integers(min_value=-(2**63), max_value=2**63 - 1)
_known = {"tools/call", "resources/read", "prompts/get", "tools/list", "resources/list", "resources/templates/list",
          "prompts/list", "initialize", "ping", "logging/setLevel", "completion/complete", "server/discover"}


@settings(max_examples=300)
@given(method=st.text(min_size=1, max_size=20), request_id=st.none() | _ids,
       params=st.none() | st.dictionaries(_keys, _values, max_size=5) | st.lists(_values, max_size=4),
       ensure_ascii=st.booleans())
def test_valid_messages_round_trip(method: str, request_id: str | int | None, params: Any, ensure_ascii: bool) -> None:
    assume(method not in _known and not method.startswith("notifications/"))
    document: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if request_id is not None:
        document["id"] = request_id
    if params is not None:
        document["params"] = params
    body = json.dumps(document, ensure_ascii=ensure_ascii).encode()
    message = parse_message(body)
    assert message == McpMessage(kind=Kind.REQUEST if request_id is not None else Kind.NOTIFICATION, method=method,
                                 id=request_id, params=params, raw=body, operation=Operation(Category.UNKNOWN))


@settings(max_examples=200)
@given(name=st.text(min_size=1, max_size=20), request_id=_ids, arguments=st.dictionaries(_keys, _values, max_size=6),
       ensure_ascii=st.booleans())
def test_valid_tool_calls_round_trip(name: str, request_id: str | int, arguments: dict[str, Any],
                                     ensure_ascii: bool) -> None:
    body = json.dumps({"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
                       "params": {"name": name, "arguments": arguments}}, ensure_ascii=ensure_ascii).encode()
    message = parse_message(body)
    assert message.id == request_id
    assert message.params == {"name": name, "arguments": arguments}
    assert message.operation == Operation(Category.TOOL_CALL, name=name, arguments=arguments)
