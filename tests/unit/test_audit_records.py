"""Audit records (RFC 8785 canonical JSON, the fast path's equivalence), ``[audit]`` settings and the key file."""

from __future__ import annotations

import hashlib
import json
import os
import random
import stat
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from deputy.audit.cosignature import CosignatureSigner
from deputy.audit.note import NoteSigner, generate_signer_key, open_note
from deputy.audit.records import (
    BIG_INTEGERS_FIELD,
    INT_MAX,
    INT_MIN,
    RECORD_TYPES,
    RecordError,
    arguments_fields,
    canonical,
    new_record,
    parse_record,
    recorded_arguments,
    uuid4_hex,
)
from deputy.audit.settings import AuditOriginMismatch, AuditSettings, audit_settings, load_or_create_signer
from deputy.canonical_json import takes_fast_path

# The fast path's domain: ASCII keys, no floats, integers within ±(2^53 - 1); any string values.
_ints = st.integers(min_value=INT_MIN, max_value=INT_MAX)
_scalars = st.none() | st.booleans() | _ints | st.text()
_ascii_keys = st.text(alphabet=st.characters(max_codepoint=0x7F), max_size=12)
fast_values = st.recursive(
    _scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(_ascii_keys, inner, max_size=6),
    max_leaves=20,
)
fast_records = st.builds(
    lambda t, fields: new_record(t, **fields),
    st.sampled_from(sorted(RECORD_TYPES)),
    st.dictionaries(_ascii_keys.filter(lambda k: k not in {"v", "type", "id", "time"}), fast_values, max_size=8),
)


def _jcs(value: Any) -> bytes:
    return bytes(rfc8785.dumps(value))


@settings(max_examples=200, deadline=None)
@given(fast_records)
def test_fast_path_is_byte_identical_to_rfc8785(record: dict[str, Any]) -> None:
    """The claim the fast path rests on: in its domain, compact sorted json.dumps is RFC 8785."""
    assert takes_fast_path(record)
    assert canonical(record) == _jcs(record)
    assert parse_record(canonical(record)) == record


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    kind = rng.randrange(8 if depth < 3 else 5)
    if kind == 0:
        return rng.choice([None, True, False])
    if kind == 1:
        return rng.randint(INT_MIN, INT_MAX) if rng.random() < 0.5 else rng.randint(-1000, 1000)
    if kind in (2, 3, 4):
        # Control characters, quotes, backslashes, DEL, non-ASCII and astral characters in values.
        alphabet = 'ab"\\\x00\x1f\n\t\x7f\u00e9\u2028\ufb01\U0001d11e '
        return "".join(rng.choice(alphabet) for _ in range(rng.randrange(12)))
    if kind == 5:
        return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]
    keys = "".join(chr(c) for c in range(0x20, 0x7F))
    return {
        "".join(rng.choice(keys) for _ in range(rng.randrange(1, 6))): _random_value(rng, depth + 1)
        for _ in range(rng.randrange(5))
    }


def test_fast_path_matches_rfc8785_on_many_random_records() -> None:
    """A cheaper, wider sweep of the same claim: 5,000 seeded random records in the fast path's domain."""
    rng = random.Random(8785)
    for _ in range(5_000):
        record = new_record("call.outcome", body=_random_value(rng), extra=_random_value(rng))
        assert takes_fast_path(record)
        assert canonical(record) == _jcs(record)


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(st.text(min_size=1).filter(lambda k: not k.isascii()), _ints, min_size=2, max_size=6)
    | st.dictionaries(_ascii_keys, st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=6)
)
def test_values_outside_the_fast_path_go_through_rfc8785(value: dict[str, Any]) -> None:
    """Non-ASCII keys (UTF-16 order differs from code point order) and floats take the rfc8785 path."""
    assert not takes_fast_path(value)
    assert canonical(value) == _jcs(value)


def test_outside_the_domain_json_dumps_would_be_wrong() -> None:
    """Why the domain matters: these are the cases where json.dumps and JCS disagree, and canonical follows JCS."""
    # U+FB01 sorts after U+1D11E by code point but before it in UTF-16 (a surrogate pair starts with 0xD8xx).
    keys = {"\U0001d11e": 1, "\ufb01": 2}
    dumped = json.dumps(keys, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert canonical(keys) == _jcs(keys) != dumped
    assert canonical(keys).index("\U0001d11e".encode()) < canonical(keys).index("\ufb01".encode())
    floats = {"a": 1e21, "b": 1.0, "c": 0.1}
    assert canonical(floats) == b'{"a":1e+21,"b":1,"c":0.1}'
    assert json.dumps(floats, sort_keys=True, separators=(",", ":")).encode() != canonical(floats)


def test_records_that_jcs_cannot_represent_raise_record_error() -> None:
    assert canonical({"n": INT_MAX, "m": INT_MIN}) == b'{"m":-9007199254740991,"n":9007199254740991}'
    with pytest.raises(RecordError, match="as strings"):
        canonical(new_record("decision", bytes_seen=2**53))
    with pytest.raises(RecordError, match="as strings"):
        canonical({"n": [-(2**63)]})
    # The documented remedy: such values are written as strings, which always serialise.
    assert canonical({"n": str(2**64)}) == b'{"n":"18446744073709551616"}'
    for bad in ({"x": float("nan")}, {"x": "\ud800"}, {1: "int key"}, {"x": object()}, {"x": b"bytes"}):
        with pytest.raises(RecordError):
            canonical(bad)
    circular: list[Any] = []
    circular.append(circular)
    with pytest.raises(RecordError):
        canonical({"x": circular})


def test_new_record_header_and_closed_type_set() -> None:
    record = new_record("token.issued", client_id="c1", scope="a b")
    assert record["v"] == 1 and record["type"] == "token.issued"
    assert uuid.UUID(hex=record["id"]).version == 4 and len(record["id"]) == 32
    assert isinstance(record["time"], int) and record["time"] > 1_700_000_000_000  # milliseconds
    assert new_record("decision")["id"] != new_record("decision")["id"]
    assert len(RECORD_TYPES) == 23 and {"log.started", "user.disabled", "user.enabled"} <= RECORD_TYPES
    assert {"connection.created", "connection.refreshed", "connection.broken", "connection.revoked"} <= RECORD_TYPES
    with pytest.raises(RecordError, match="unknown audit record type"):
        new_record("token.stolen")
    for reserved in ("v", "type", "id", "time"):
        with pytest.raises(RecordError, match="reserved"):
            new_record("decision", **{reserved: 1})


def test_arguments_fields_store_and_digest() -> None:
    arguments = {"b": [1, 2], "a": "x"}
    assert arguments_fields(arguments, "store") == {"arguments": arguments}
    assert arguments_fields(arguments, "store")["arguments"] is arguments  # nothing to rewrite: nothing copied
    digest = arguments_fields({"a": "x", "b": [1, 2]}, "digest")
    assert digest == {"arguments": {"sha256": hashlib.sha256(b'{"a":"x","b":[1,2]}').hexdigest()}}
    assert arguments_fields(arguments, "digest") == digest  # key order does not matter
    assert arguments_fields({"a": "y", "b": [1, 2]}, "digest") != digest
    with pytest.raises(RecordError):
        arguments_fields(arguments, "drop")  # type: ignore[arg-type]


# Issue 11, finding 7: {"a": 9007199254740993} was recorded as {"unrepresentable": ...} while the call went on.

def test_integers_beyond_2_53_are_recorded_as_their_digits_with_pointers() -> None:
    arguments = {"a": 2**53 + 1, "n": {"x/y": [1, -(2**63)], "~": 2**63 - 1}, "small": INT_MAX, "s": "2"}
    fields = arguments_fields(arguments, "store")
    assert fields == {
        "arguments": {"a": "9007199254740993", "n": {"x/y": [1, "-9223372036854775808"], "~": "9223372036854775807"},
                      "small": INT_MAX, "s": "2"},
        BIG_INTEGERS_FIELD: ["/a", "/n/x~1y/1", "/n/~0"],
    }
    assert arguments["a"] == 2**53 + 1, "the parsed arguments are not changed"
    record = new_record("decision", **fields)
    entry = canonical(record)
    assert entry == _jcs(record), "still RFC 8785 canonical JSON"
    assert b'"9007199254740993"' in entry
    assert recorded_arguments(parse_record(entry)) == arguments


def test_digest_mode_digests_the_exact_integers() -> None:
    exact = arguments_fields({"a": 2**53 + 1}, "digest")
    assert exact == {"arguments": {"sha256": hashlib.sha256(b'{"a":"9007199254740993"}').hexdigest()},
                     BIG_INTEGERS_FIELD: ["/a"]}
    assert arguments_fields({"a": 2**53 + 2}, "digest") != exact, "the next integer digests differently"
    assert arguments_fields({"a": "9007199254740993"}, "digest")["arguments"] == exact["arguments"]
    assert BIG_INTEGERS_FIELD not in arguments_fields({"a": "9007199254740993"}, "digest"), \
        "the string and the integer are told apart by the pointers"


def test_big_integer_field_order_does_not_depend_on_key_order() -> None:
    one = arguments_fields({"b": 2**60, "a": 2**60}, "store")
    other = arguments_fields({"a": 2**60, "b": 2**60}, "store")
    assert canonical(new_record("decision", **one) | {"id": "x", "time": 1}) == \
        canonical(new_record("decision", **other) | {"id": "x", "time": 1})


@pytest.mark.parametrize("pointers", [["/a"], ["/b"], [""], ["/a/0"], ["/c"], ["/d"], ["/e"]])
def test_recorded_arguments_refuses_pointers_that_do_not_name_big_integers(pointers: list[str]) -> None:
    record = {"arguments": {"a": "x", "b": "12", "c": "9007199254740991", "d": "09007199254740993",
                            "e": 9007199254740993}, BIG_INTEGERS_FIELD: pointers}
    with pytest.raises(RecordError, match=BIG_INTEGERS_FIELD):
        recorded_arguments(record)


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.text(),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
                    max_leaves=16), st.sampled_from(["store", "digest"]))
def test_any_int64_arguments_are_recorded_and_read_back_exactly(arguments: Any, mode: str) -> None:
    fields = arguments_fields(arguments, mode)  # type: ignore[arg-type]
    entry = canonical(new_record("decision", **fields))
    assert entry == _jcs(json.loads(entry))
    if mode == "store":
        assert recorded_arguments(parse_record(entry)) == arguments


def test_parse_record_refuses_non_canonical_entries() -> None:
    record = new_record("decision", allowed=True)
    assert parse_record(canonical(record)) == record
    with pytest.raises(RecordError, match="canonical"):
        parse_record(json.dumps(record).encode())  # spaces
    with pytest.raises(RecordError):
        parse_record(canonical({**record, "type": "nope"}))


# Settings


def test_audit_settings_defaults(tmp_path: Path) -> None:
    got = audit_settings({}, tmp_path, "https://deputy.example.com")
    assert got == AuditSettings(origin="deputy.example.com/deputy-audit", key_file=tmp_path / "audit.key")
    assert (got.checkpoint_every, got.checkpoint_interval_ms, got.arguments, got.batch_max) == (
        1000,
        1000,
        "store",
        512,
    )
    assert audit_settings({}, tmp_path, "http://127.0.0.1:8080").origin == "127.0.0.1:8080/deputy-audit"
    assert audit_settings({}, tmp_path, "http://[::1]:8080").origin == "[::1]:8080/deputy-audit"


def test_audit_settings_values(tmp_path: Path) -> None:
    witness = CosignatureSigner.generate("witness.example").verifier().vkey()
    got = audit_settings(
        {
            "origin": "log.example/audit",
            "key_file": "/etc/deputy/audit.key",
            "checkpoint_every": 10,
            "checkpoint_interval_ms": 250,
            "arguments": "digest",
            "batch_max": 64,
            "witnesses": [{"url": "https://witness.example/", "vkey": witness}],
        },
        tmp_path,
        "https://deputy.example.com",
    )
    assert got == AuditSettings(
        "log.example/audit",
        Path("/etc/deputy/audit.key"),
        10,
        250,
        "digest",
        (("https://witness.example/", witness),),
        64,
    )
    assert audit_settings({"key_file": "keys/a.key"}, tmp_path, "https://x.example").key_file == tmp_path / "keys/a.key"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"origni": "x"}, "audit.origni: unknown"),
        ({"origin": "has space"}, "audit.origin:"),
        ({"origin": "a+b"}, "audit.origin:"),
        ({"origin": 5}, "audit.origin:"),
        ({"key_file": ""}, "audit.key_file:"),
        ({"checkpoint_every": 0}, "audit.checkpoint_every:"),
        ({"checkpoint_every": True}, "audit.checkpoint_every:"),
        ({"checkpoint_every": "10"}, "audit.checkpoint_every:"),
        ({"checkpoint_interval_ms": 5}, "audit.checkpoint_interval_ms:"),
        ({"checkpoint_interval_ms": 3_600_001}, "audit.checkpoint_interval_ms:"),
        ({"batch_max": 0}, "audit.batch_max:"),
        ({"batch_max": 10_001}, "audit.batch_max:"),
        ({"arguments": "drop"}, "audit.arguments:"),
        ({"witnesses": "https://w.example"}, "audit.witnesses:"),
        ({"witnesses": [{"url": "https://w.example"}]}, r"audit.witnesses\[0\]:"),
        ({"witnesses": [{"url": "ftp://w.example", "vkey": "x"}]}, r"audit\.witnesses\[0\]\.url: "),
        ({"witnesses": [{"url": "https://w.example", "vkey": "nope"}]}, r"audit\.witnesses\[0\]\.vkey: "),
    ],
)
def test_audit_settings_errors(tmp_path: Path, raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        audit_settings(raw, tmp_path, "https://deputy.example.com")


def test_witness_vkey_must_be_a_cosignature_key(tmp_path: Path) -> None:
    """A signed-note (type 0x01) vkey is not a witness cosigner key (type 0x04)."""
    note_vkey = NoteSigner.from_key(generate_signer_key("w.example")).verifier().vkey()
    with pytest.raises(ValueError, match="cosignature"):
        audit_settings({"witnesses": [{"url": "https://w.example", "vkey": note_vkey}]}, tmp_path, "https://d.example")


def test_key_file_created_once_private_then_loaded(tmp_path: Path) -> None:
    settings_ = audit_settings({}, tmp_path / "data", "https://deputy.example.com")
    signer = load_or_create_signer(settings_)
    assert signer.name == "deputy.example.com/deputy-audit"
    mode = stat.S_IMODE(os.stat(settings_.key_file).st_mode)
    assert mode == 0o600
    again = load_or_create_signer(settings_)
    assert again.key_string() == signer.key_string()  # loaded, not regenerated
    assert [p.name for p in settings_.key_file.parent.iterdir()] == ["audit.key"]  # no temporary left behind
    # A note signed by it verifies with its verifier key.
    assert open_note(signer.sign("hello\n"), [again.verifier()]).text == "hello\n"


def test_key_file_for_another_origin_is_refused(tmp_path: Path) -> None:
    first = audit_settings({}, tmp_path, "https://one.example")
    load_or_create_signer(first)
    # Issue 13: the origin is fixed when the log is created; a new public URL keeps the log's origin.
    moved = audit_settings({}, tmp_path, "https://two.example")
    assert moved.origin == "one.example/deputy-audit"
    assert load_or_create_signer(moved).name == "one.example/deputy-audit"
    # Only an origin set explicitly can name another log, and that is refused, naming both.
    second = audit_settings({"origin": "two.example/deputy-audit"}, tmp_path, "https://two.example")
    with pytest.raises(AuditOriginMismatch, match=r"audit\.origin is 'two\.example/deputy-audit' .*'one\.example/"):
        load_or_create_signer(second)
    first.key_file.write_text("garbage\n")
    with pytest.raises(ValueError, match=r"audit\.key_file:"):
        load_or_create_signer(first)


def test_concurrent_key_creation_yields_one_key(tmp_path: Path) -> None:
    settings_ = audit_settings({}, tmp_path, "https://deputy.example.com")
    keys: list[str] = []
    barrier = threading.Barrier(8)

    def create() -> None:
        barrier.wait()
        keys.append(load_or_create_signer(settings_).key_string())

    threads = [threading.Thread(target=create) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(keys) == 8 and len(set(keys)) == 1


def test_record_ids_are_uuid4_hex_and_distinct() -> None:
    ids = [new_record("decision")["id"] for _ in range(2000)] + [uuid4_hex() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for value in ids:
        parsed = uuid.UUID(hex=value)
        assert parsed.hex == value and parsed.version == 4 and parsed.variant == uuid.RFC_4122
