"""One canonical JSON (issue 17): RFC 8785's own vectors, the fast path against the general path, and the callers.

Vectors are written from the RFC's text: Appendix B (number serialisation samples), §3.2.3 (sorting of object
properties) and §3.2.2-§3.2.4 (the worked example and its UTF-8 bytes).
"""

from __future__ import annotations

import enum
import hashlib
import json
import struct
from collections.abc import Callable
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from deputy.audit.records import (
    BIG_INTEGERS_FIELD,
    RecordError,
    arguments_fields,
    canonical,
    new_record,
    parse_record,
    recorded_arguments,
)
from deputy.audit.verify.record_checks import record_problem
from deputy.canonical_json import (
    INT_MAX,
    INT_MIN,
    NotCanonicalJson,
    canonical_json,
    fast_path_text,
    takes_fast_path,
)
from deputy.policy import ArgumentError, build_schema
from deputy.storage.approvals import call_hash, chain_hash

# RFC 8785 Appendix B: IEEE 754 double (hex) → its JSON representation; None: NaN/Infinity, not permitted.
APPENDIX_B: list[tuple[str, str | None]] = [
    ("0000000000000000", "0"),  # zero
    ("8000000000000000", "0"),  # minus zero
    ("0000000000000001", "5e-324"),  # min pos number
    ("8000000000000001", "-5e-324"),  # min neg number
    ("7fefffffffffffff", "1.7976931348623157e+308"),  # max pos number
    ("ffefffffffffffff", "-1.7976931348623157e+308"),  # max neg number
    ("4340000000000000", "9007199254740992"),  # max pos int (1)
    ("c340000000000000", "-9007199254740992"),  # max neg int (1)
    ("4430000000000000", "295147905179352830000"),  # ~2**68 (2)
    ("7fffffffffffffff", None),  # NaN (3)
    ("7ff0000000000000", None),  # Infinity (3)
    ("44b52d02c7e14af5", "9.999999999999997e+22"),
    ("44b52d02c7e14af6", "1e+23"),
    ("44b52d02c7e14af7", "1.0000000000000001e+23"),
    ("444b1ae4d6e2ef4e", "999999999999999700000"),
    ("444b1ae4d6e2ef4f", "999999999999999900000"),
    ("444b1ae4d6e2ef50", "1e+21"),
    ("3eb0c6f7a0b5ed8c", "9.999999999999997e-7"),
    ("3eb0c6f7a0b5ed8d", "0.000001"),
    ("41b3de4355555553", "333333333.3333332"),
    ("41b3de4355555554", "333333333.33333325"),
    ("41b3de4355555555", "333333333.3333333"),
    ("41b3de4355555556", "333333333.3333334"),
    ("41b3de4355555557", "333333333.33333343"),
    ("becbf647612f3696", "-0.0000033333333333333333"),
    ("43143ff3c1cb0959", "1424953923781206.2"),  # round to even (4)
]


def _double(bits: str) -> float:
    return float(struct.unpack(">d", bytes.fromhex(bits))[0])


@pytest.mark.parametrize(("bits", "expected"), APPENDIX_B, ids=[bits for bits, _ in APPENDIX_B])
def test_rfc8785_appendix_b_numbers(bits: str, expected: str | None) -> None:
    number = _double(bits)
    assert not takes_fast_path(number) and not takes_fast_path([number])  # floats never take the fast path
    if expected is None:
        with pytest.raises(NotCanonicalJson):
            canonical_json({"n": number})
        return
    assert canonical_json(number) == expected.encode()
    assert canonical_json({"n": [number]}) == b'{"n":[' + expected.encode() + b"]}"


# RFC 8785 §3.2.3: the sorting test data, and the order its values must come out in.
SORTING_INPUT = r"""{
    "\u20ac": "Euro Sign",
    "\r": "Carriage Return",
    "\ufb33": "Hebrew Letter Dalet With Dagesh",
    "1": "One",
    "\ud83d\ude00": "Emoji: Grinning Face",
    "\u0080": "Control",
    "\u00f6": "Latin Small Letter O With Diaeresis"
}"""
SORTED_VALUES = [
    "Carriage Return",
    "One",
    "Control",
    "Latin Small Letter O With Diaeresis",
    "Euro Sign",
    "Emoji: Grinning Face",
    "Hebrew Letter Dalet With Dagesh",
]


def test_rfc8785_sorting_example() -> None:
    value = json.loads(SORTING_INPUT)
    assert not takes_fast_path(value)  # non-ASCII keys
    output = canonical_json(value)
    assert [v for _, v in json.loads(output, object_pairs_hook=list)] == SORTED_VALUES
    # Sorting by code point (json.dumps's sort_keys) puts U+FB33 before U+1F600: why the fast path is ASCII-only.
    by_code_point = json.loads(fast_path_text(value), object_pairs_hook=list)
    assert [v for _, v in by_code_point] != SORTED_VALUES


# RFC 8785 §3.2.2: the sample object as parsed; §3.2.4: its canonical form as UTF-8, in hexadecimal.
PRIMITIVES_INPUT = r"""{
    "numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],
    "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
    "literals": [null, true, false]
}"""
PRIMITIVES_UTF8 = """
    7b 22 6c 69 74 65 72 61 6c 73 22 3a 5b 6e 75 6c 6c 2c 74 72
    75 65 2c 66 61 6c 73 65 5d 2c 22 6e 75 6d 62 65 72 73 22 3a
    5b 33 33 33 33 33 33 33 33 33 2e 33 33 33 33 33 33 33 2c 31
    65 2b 33 30 2c 34 2e 35 2c 30 2e 30 30 32 2c 31 65 2d 32 37
    5d 2c 22 73 74 72 69 6e 67 22 3a 22 e2 82 ac 24 5c 75 30 30
    30 66 5c 6e 41 27 42 5c 22 5c 5c 5c 5c 5c 22 2f 22 7d
"""


def test_rfc8785_primitives_example_bytes() -> None:
    expected = bytes.fromhex(PRIMITIVES_UTF8)
    assert canonical_json(json.loads(PRIMITIVES_INPUT)) == expected
    assert expected.decode() == (
        '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],'
        '"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}'
    )
    # Without its floats the sample takes the fast path, and the string member's bytes are the same.
    strings = {k: v for k, v in json.loads(PRIMITIVES_INPUT).items() if k != "numbers"}
    assert takes_fast_path(strings)
    assert canonical_json(strings) == expected.replace(
        b',"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27]', b""
    )


# Keys and strings that stress both paths: controls, quotes, DEL, high BMP, astral (a UTF-16 surrogate pair).
_tricky = st.sampled_from(["", "a", "A", "\x00", "\x1f", "\n", '"', "\\", "\x7f", "\u00e9", "\u2028", "\ue000",
                           "\ufb33", "\uffff", "\U0001f600", "\U0001d11e"])
_strings = st.text() | st.lists(_tricky, max_size=6).map("".join)
_ascii_keys = st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=8)
_safe_ints = st.integers(min_value=INT_MIN, max_value=INT_MAX)
_floats = st.floats(allow_nan=False, allow_infinity=False)


def _json(keys: st.SearchStrategy[str], scalars: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=5) | st.dictionaries(keys, inner, max_size=6),
        max_leaves=25,
    )


any_json = _json(_strings, st.none() | st.booleans() | _safe_ints | _floats | _strings)
fast_json = _json(_ascii_keys, st.none() | st.booleans() | _safe_ints | _strings)


@settings(max_examples=400, deadline=None)
@given(any_json)
def test_canonical_json_is_rfc8785_on_any_json_value(value: Any) -> None:
    assert canonical_json(value) == rfc8785.dumps(value)


@settings(max_examples=400, deadline=None)
@given(fast_json)
def test_fast_path_equals_the_general_path_where_it_is_taken(value: Any) -> None:
    assert takes_fast_path(value)
    assert fast_path_text(value).encode() == rfc8785.dumps(value)


def _counting_rfc8785(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    calls: list[Any] = []
    real: Callable[[Any], bytes] = rfc8785.dumps

    def dumps(value: Any) -> bytes:
        calls.append(value)
        return real(value)

    monkeypatch.setattr(rfc8785, "dumps", dumps)  # canonical_json looks it up on the module
    return calls


class Small(enum.IntEnum):
    ONE = 1


OUTSIDE_THE_FAST_PATH: list[tuple[str, Any]] = [
    ("astral and high-BMP keys: UTF-16 order is not code point order", {"\U0001f600": 1, "\ufb33": 2}),
    ("a non-ASCII key", {"\u00e9": 1, "e": 2}),
    ("1e21 and 1e20: JCS writes the second in full", {"a": 1e21, "b": 1e20}),
    ("minus zero", {"z": -0.0}),
    ("a float that is an integer", [1.0, 2.5]),
    ("a float nested deep", {"a": [{"b": [0.1]}]}),
    ("an IntEnum", {"n": Small.ONE}),
]


@pytest.mark.parametrize(("why", "value"), OUTSIDE_THE_FAST_PATH, ids=[why for why, _ in OUTSIDE_THE_FAST_PATH])
def test_values_outside_the_domain_take_the_general_path(
    why: str, value: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not takes_fast_path(value)
    calls = _counting_rfc8785(monkeypatch)
    assert canonical_json(value) == rfc8785.dumps(value)
    assert calls and calls[0] is value


def test_where_the_fast_path_would_be_wrong_it_is_not_taken() -> None:
    """Each of these is a value on which compact sorted json.dumps and RFC 8785 disagree."""
    for value, jcs in [
        ({"\U0001f600": 1, "\ufb33": 2}, '{"\U0001f600":1,"\ufb33":2}'.encode()),
        ({"a": 1e20}, b'{"a":100000000000000000000}'),
        ([-0.0, 1.0, 0.1], b"[0,1,0.1]"),
    ]:
        assert fast_path_text(value).encode() != jcs
        assert canonical_json(value) == jcs


def test_values_in_the_domain_never_reach_rfc8785(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _counting_rfc8785(monkeypatch)
    value: dict[str, Any] = {"v": 1, "s": "\u00e9\U0001f600\x00\"\\", "l": [None, True, INT_MAX, INT_MIN, ()], "d": {}}
    assert canonical_json(value) == rfc8785.dumps(value)
    assert calls == [value]  # only the comparison's own call


@pytest.mark.parametrize("number", [INT_MAX + 1, INT_MIN - 1, 2**63 - 1, -(2**63)])
def test_integers_beyond_the_exact_range_are_refused(number: int) -> None:
    assert not takes_fast_path({"n": number})
    with pytest.raises(NotCanonicalJson, match="as strings"):
        canonical_json({"n": number})


def test_what_jcs_cannot_represent_raises_not_canonical_json() -> None:
    circular: list[Any] = []
    circular.append(circular)
    nested: Any = "x"
    for _ in range(100_000):
        nested = [nested]
    for bad in (
        float("nan"), float("inf"), -float("inf"), {"x": [float("nan")]},
        "\ud800", {"x": "\udfff"},  # lone surrogates in values: the fast path's domain
        {"\ud800": 1}, {"\u00e9": "\ud800"},  # in a key, and beside a non-ASCII key: the general path
        {1: "int key"}, {"x": object()}, {"x": b"bytes"}, {"x": {1, 2}},
        circular, nested,
    ):
        with pytest.raises(NotCanonicalJson):
            canonical_json(bad)
    with pytest.raises(ValueError):
        fast_path_text(float("nan"))  # not JSON: the shared encoder refuses to write it


def test_records_keep_their_error_type() -> None:
    assert canonical({"b": 1, "a": "x"}) == b'{"a":"x","b":1}'
    for bad in ({"n": 2**53}, {"x": float("nan")}, {"\ud800": 1}):
        with pytest.raises(RecordError):
            canonical(bad)


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_quick_verification_does_not_pass_nan_as_canonical(constant: bytes) -> None:
    """Issue 17: the verifier's quick check read NaN/Infinity (Python's decoder accepts them) and re-wrote them as
    the same bytes, so a log entry holding one passed as a canonical record while parse_record refused it."""
    entry = b'{"id":"x","n":' + constant + b',"time":1,"type":"decision","v":1}'
    problem = record_problem(entry)
    assert problem is not None and "RFC 8785" in problem
    assert record_problem(b'{"id":"x","n":1,"time":1,"type":"decision","v":1}') is None


def test_arguments_that_are_one_big_integer_read_back() -> None:
    """Issue 17 (found by test_audit_records' property test): arguments that are one integer beyond ±(2^53 - 1) are
    written with the RFC 6901 pointer to the whole value, "", and recorded_arguments refused that pointer."""
    for number in (2**60, -(2**63)):
        fields = arguments_fields(number, "store")
        assert fields == {"arguments": str(number), BIG_INTEGERS_FIELD: [""]}
        assert recorded_arguments(parse_record(canonical(new_record("decision", **fields)))) == number
    for arguments, pointer in [("12", ""), ({"a": str(2**60)}, ""), ({"a": str(2**60)}, "x/a"), ([str(2**60)], 0)]:
        with pytest.raises(RecordError, match=BIG_INTEGERS_FIELD):
            recorded_arguments({"arguments": arguments, BIG_INTEGERS_FIELD: [pointer]})
    assert recorded_arguments({"arguments": {"a": str(2**60)}, BIG_INTEGERS_FIELD: ["/a"]}) == {"a": 2**60}


# Approval hashes written before the one helper existed (rfc8785.dumps directly) must still match.
def test_approval_hashes_are_unchanged() -> None:
    arguments = {"path": "/etc/hosts", "n": 2**60, "x": 1.5, "\u00e9": [True, None]}
    assert call_hash("files", "read", arguments) == "445e091b323473d3ef83fad015a2ccdd3b675c9c3555caa8c3f5bb70c72ec257"
    assert call_hash("files", "read", {"path": "/etc/hosts"}) == (
        "450d7a8495f7cbc7f39acaa5a3e5454e6b85473a093faa20ae445fbcceada370"
    )
    actors = [{"sub": "alice", "client_id": "agent-b", "iss": "https://as.example"}]
    assert chain_hash(actors) == "a7d78497e912075cf89863636ec39d56cc68f29ed87cff78b60df641a14cdfbc"
    assert chain_hash(None) == chain_hash([]) == hashlib.sha256(b"[]").hexdigest()


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_strings, any_json | st.integers(min_value=-(2**63), max_value=2**63 - 1), max_size=5))
def test_call_hash_is_the_rfc8785_hash_of_the_exact_call(arguments: dict[str, Any]) -> None:
    from deputy.exact_json import big_integers_as_digits

    representable, pointers = big_integers_as_digits(arguments)
    call: dict[str, Any] = {"server": "s", "tool": "t", "arguments": representable, "big_integers": pointers}
    assert call_hash("s", "t", arguments) == hashlib.sha256(rfc8785.dumps(call)).hexdigest()


UNKNOWN = build_schema([{"name": "any", "inputSchema": {"type": "object", "properties": {"anything": {}}}}])


def _unknown_id(value: Any) -> str:
    _, context, _ = UNKNOWN.request("tools/call", "any", {"anything": value})
    entity = context["input"]["anything"]["__entity"]
    assert entity["type"] == "Deputy::Unknown"
    return str(entity["id"])


def test_opaque_arguments_are_named_by_their_canonical_json() -> None:
    """An argument a policy sees only as opaque is named by RFC 8785 bytes, its big integers exact."""
    assert _unknown_id({"a": 1, "b": [2]}) == _unknown_id({"b": [2], "a": 1})
    assert _unknown_id(1) == _unknown_id(1.0)  # one JSON number, one name
    assert _unknown_id({"a": 1}) != _unknown_id({"a": "1"})
    # A 64-bit integer is still a value (not refused), and not the same as its digits in a string.
    assert _unknown_id(2**60) != _unknown_id(str(2**60))
    assert _unknown_id([2**60, -(2**63)]) != _unknown_id([2**60 + 1, -(2**63)])
    with pytest.raises(ArgumentError):
        _unknown_id(float("nan"))
