"""Property tests of the JSON-RPC parser (deputy.gateway.jsonrpc, deputy.gateway.strict_json).

- Any bytes at all give a message or a refusal from the closed set (-32700, -32600, -32602), never
  another exception, and every refusal is a JSON-RPC error response that can be sent.
- Numbers agree with an exact reading (issue 11, finding 7 and its class): a number is accepted
  exactly when the value Deputy holds, and the audit record writes, is the decimal its digits say;
  otherwise it is refused with -32602 naming its pointer.
- Ids: a request id is accepted exactly when it is a string or an integer; batches are refused;
  a lone surrogate anywhere is refused; a duplicate key anywhere is refused.
- Valid messages come back as sent.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from deputy.audit.records import arguments_fields, canonical
from deputy.gateway.jsonrpc import Category, JsonRpcRefused, Kind, McpMessage, Operation, parse_message
from tests.support.jsonrpc_bodies import INVALID_PARAMS, INVALID_REQUEST, PARSE_ERROR, call, refusal

CLOSED_SET = {PARSE_ERROR, INVALID_REQUEST, INVALID_PARAMS}


def outcome(body: bytes) -> McpMessage | JsonRpcRefused:
    try:
        return parse_message(body)
    except JsonRpcRefused as refused:
        return refused


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8)
    | st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: x != 0 or math.copysign(1, x) > 0),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=16)


@st.composite
def mutated_messages(draw: st.DrawFn) -> bytes:
    """A valid tools/call, then a few bytes replaced, inserted or deleted."""
    body = bytearray(json.dumps({"jsonrpc": "2.0", "id": draw(st.integers(0, 99)), "method": "tools/call",
                                 "params": {"name": "t", "arguments": draw(st.dictionaries(st.text(max_size=4),
                                                                                         _json_values, max_size=3))}},
                                ensure_ascii=draw(st.booleans())).encode())
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(body)))
        edit = draw(st.sampled_from(["replace", "insert", "delete"]))
        byte = draw(st.sampled_from([*b'{}[]",:\\-.eE0159u\x00\xff\xc3\xed', draw(st.integers(0, 255))]))
        if edit == "insert":
            body.insert(at, byte)
        elif at < len(body):
            if edit == "replace":
                body[at] = byte
            else:
                del body[at]
    return bytes(body)


def _sendable(refused: JsonRpcRefused) -> None:
    assert refused.code in CLOSED_SET, refused.code
    response = refused.response()
    assert json.loads(json.dumps(response)) == response
    assert response["error"] == {"code": refused.code, "message": refused.message}
    assert type(response["id"]) in (str, int, type(None)) and type(response["id"]) is not bool


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200) | mutated_messages())
def test_any_bytes_give_a_message_or_a_refusal_from_the_closed_set(body: bytes) -> None:
    result = outcome(body)
    if isinstance(result, JsonRpcRefused):
        _sendable(result)
    else:
        assert result.raw == body


# --- numbers: an exact reading as the reference ---

_number_texts = st.from_regex(r"\A-?(0|[1-9][0-9]{0,24})(\.[0-9]{1,24})?([eE][+-]?[0-9]{1,3})?\Z")


def reference_accepts(text: str) -> bool:
    """Whether some value every reader agrees on holds exactly the decimal ``text`` says (see strict_json)."""
    exact = Decimal(text)
    if exact.is_zero() and text.startswith("-"):
        return False  # the record's RFC 8785 form writes negative zero as 0
    if not any(mark in text for mark in ".eE"):
        return -(2**63) <= exact <= 2**63 - 1
    double = float(text)
    return math.isfinite(double) and Decimal(repr(double)) == exact


@settings(max_examples=500, deadline=None)
@given(_number_texts | st.sampled_from(["9007199254740993", "-9223372036854775808", "9223372036854775808",
                                        "9007199254740993.0", "1e400", "1e-400", "-0", "-0.0", "0.1", "1.50",
                                        "5e-324", "2.4703282292062328e-324", "1.7976931348623157e308",
                                        "1.7976931348623159e308"]))
def test_a_number_is_accepted_exactly_when_its_digits_are_what_is_held_and_recorded(text: str) -> None:
    result = outcome(call(f'{{"n":{text}}}'))
    if reference_accepts(text):
        assert isinstance(result, McpMessage), f"{text}: {getattr(result, 'message', '')}"
        held = result.operation.arguments["n"]
        assert Decimal(repr(held) if type(held) is float else held) == Decimal(text)
        record = canonical(arguments_fields(result.operation.arguments, "store")["arguments"])
        recorded = json.loads(record, parse_float=Decimal, parse_int=Decimal)["n"]  # the record's digits, exactly
        assert Decimal(recorded) == Decimal(text), f"the record says {record!r}"
    else:
        assert isinstance(result, JsonRpcRefused), f"{text} was accepted"
        assert (result.code, result.request_id) == (INVALID_PARAMS, 1)
        assert result.message.startswith("the number at /params/arguments/n ")


# --- ids, batches, surrogates ---

@settings(max_examples=300, deadline=None)
@given(request_id=_json_values | st.integers(2**63, 2**70), method=st.sampled_from(["tools/list", "ping", "x/y"]))
def test_a_request_id_is_accepted_exactly_when_it_is_a_string_or_an_integer(request_id: Any, method: str) -> None:
    body = json.dumps({"jsonrpc": "2.0", "id": request_id, "method": method}).encode()
    result = outcome(body)
    if (type(request_id) is str or type(request_id) is int) and -(2**63) <= (
            request_id if type(request_id) is int else 0) < 2**63:
        assert isinstance(result, McpMessage) and result.id == request_id
    else:
        assert isinstance(result, JsonRpcRefused) and result.code == INVALID_REQUEST, body
        assert result.request_id is None
        _sendable(result)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.fixed_dictionaries({"jsonrpc": st.just("2.0"), "id": st.integers(0, 9),
                                       "method": st.sampled_from(["ping", "tools/call"])}) | _json_values,
                max_size=4))
def test_every_batch_is_refused(batch: list[Any]) -> None:
    result = outcome(json.dumps(batch).encode())
    assert isinstance(result, JsonRpcRefused) and result.code == INVALID_REQUEST
    assert "batch" in result.message and result.request_id is None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(arguments=st.dictionaries(st.text(max_size=5), _json_values, min_size=1, max_size=4), data=st.data(),
       surrogate=st.integers(0xD800, 0xDFFF), upper=st.booleans())
def test_a_lone_surrogate_anywhere_is_refused(arguments: dict[str, Any], data: st.DataObject, surrogate: int,
                                              upper: bool) -> None:
    body = call(json.dumps(arguments, ensure_ascii=data.draw(st.booleans()))).decode()
    quotes = [i for i, char in enumerate(body) if char == '"' and body[i - 1] != "\\"]
    at = data.draw(st.sampled_from(quotes)) + 1  # just inside a string (a key or a value), or just after one
    escape = f"\\u{surrogate:04X}" if upper else f"\\u{surrogate:04x}"
    mutated = (body[:at] + escape + body[at:]).encode()
    result = outcome(mutated)
    assert isinstance(result, JsonRpcRefused), mutated
    _sendable(result)
    if result.code == PARSE_ERROR and "surrogate" not in result.message:
        # The escape landed outside a string (after a closing quote): not JSON at all.
        assert result.message == "the body is not valid JSON"


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
