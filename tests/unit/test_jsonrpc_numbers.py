"""Numbers in a POSTed MCP message (deputy.gateway.strict_json, through deputy.gateway.jsonrpc).

A number is taken only when the value Deputy holds is the number its digits say; otherwise -32602 in ``params`` and
-32600 elsewhere, the id echoed when it could be read, the number named by its RFC 6901 pointer. For an upstream
that reads numbers as doubles (``servers.NAME.big_integers = "refuse"``) an integer beyond ±(2^53 - 1) is one more
such number (RFC 7493 §2.2).
"""

from __future__ import annotations

import pytest

from deputy.gateway.jsonrpc import JsonRpcRefused, parse_message
from tests.support.jsonrpc_bodies import INVALID_PARAMS, INVALID_REQUEST, PARSE_ERROR, call, refusal


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


@pytest.mark.parametrize(("text", "refused"), [
    ("9007199254740991", False), ("-9007199254740991", False), ("123456789012345", False), ("-12345678901234", False),
    ("9007199254740992", True), ("-9007199254740992", True), ("9007199254740993", True),
    ("9223372036854775807", True), ("1000000000000000000", True), ("-0", True),
])
def test_for_a_reader_of_doubles_only_integers_a_double_holds_exactly_pass(text: str, refused: bool) -> None:
    """``doubles``: an upstream that reads numbers as doubles (JavaScript) reads 2^53 + 1 as 2^53 (RFC 7493 §2.2)."""
    body = call(f'{{"a":[1,{{"n":{text}}}]}}', request_id='"d"')
    if text != "-0":  # an exact reader takes each of them (-0 is refused whoever reads)
        assert parse_message(body).operation.arguments == {"a": [1, {"n": int(text)}]}
    if not refused:
        assert parse_message(body, doubles=True).operation.arguments == {"a": [1, {"n": int(text)}]}
        return
    with pytest.raises(JsonRpcRefused) as caught:
        parse_message(body, doubles=True)
    assert (caught.value.code, caught.value.request_id) == (INVALID_PARAMS, "d")
    assert caught.value.message.startswith("the number at /params/arguments/a/1/n ")
    assert ("2^53" if text != "-0" else "negative zero") in caught.value.message


def test_for_a_reader_of_doubles_an_id_beyond_2_53_is_an_invalid_request() -> None:
    with pytest.raises(JsonRpcRefused) as caught:
        parse_message(call("{}", "9007199254740993"), doubles=True)
    assert (caught.value.code, caught.value.request_id) == (INVALID_REQUEST, None)
    assert parse_message(call("{}", "9007199254740993")).id == 2**53 + 1


def test_a_parse_error_after_an_inexact_number_is_still_a_parse_error() -> None:
    assert refusal(call('{"n":1e400,"m":1,"m":2}')).code == PARSE_ERROR
    assert refusal(call('{"n":1e400,') + b"garbage").code == PARSE_ERROR
