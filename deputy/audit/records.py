"""Audit records: the versioned JSON objects that become the leaves of the audit log.

Every record is a JSON object ``{"v": 1, "type": ..., "id": <uuid4 hex>, "time": <int ms since the epoch>,
...fields}``, ``type`` one of :data:`RECORD_TYPES`. A record is stored and hashed (RFC 9162 §2.1.1: the leaf
hash is ``SHA-256(0x00 || entry)``) as its RFC 8785 (JSON Canonicalization Scheme) serialisation, so that a
verifier can re-derive the exact leaf bytes from the parsed JSON: one record, one spelling, one hash.

Canonicalisation, :func:`canonical`:

- The general path is ``rfc8785.dumps``: keys sorted by their UTF-16 code units (RFC 8785 §3.2.3), numbers in the
  ECMAScript form (§3.2.2.3), strings with the minimal escapes (§3.2.2.2).
- The fast path is ``json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False)``, taken only inside a
  domain where it is byte-identical to JCS: every object key an ASCII ``str`` (UTF-16 order is then code point
  order, which is what ``sort_keys`` uses), no floats (JSON's and JCS's float spellings differ), every integer a
  plain ``int`` within JCS's ±(2^53 - 1), and otherwise only ``str``/``bool``/``None``/``list``/``tuple``/``dict``.
  Both escape exactly ``"``, ``\\``, and U+0000..U+001F with the same short forms and lowercase ``\\u00xx``;
  neither escapes anything else. ``tests/unit/test_audit_records.py`` checks the identity with a property test.
  Measured on this machine: a typical 0.5 kB record takes ~10 µs on the fast path against ~45 µs through
  ``rfc8785``.

Records never fail to serialise by surprise: what JCS cannot represent (an integer beyond ±(2^53 - 1), NaN or
infinity, a lone surrogate, a non-string key, an unknown type) makes :func:`canonical` raise :class:`RecordError`
naming the problem, in the caller's coroutine and before anything is queued for the log, so one bad record never
fails another's append. Callers write values that may exceed 2^53 (byte counts, foreign ids) as strings.

A call's arguments are recorded exactly (:func:`arguments_fields`): the gateway accepts integers up to signed 64
bits (:mod:`deputy.gateway.strict_json`), and those beyond ±(2^53 - 1) are written as their decimal digits, a string,
with the RFC 6901 pointers to them (relative to the arguments, sorted) in the record's ``arguments_big_integers``
field. That optional field extends the version-1 decision record compatibly: it appears only when there are such
integers, and :func:`recorded_arguments` reads the exact arguments back. In digest mode the digest is over the same
canonical value and the pointers stay beside it (they name arguments, never their values), so the digest binds the
exact integers too.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import uuid
from collections.abc import Mapping
from typing import Any, Literal

import rfc8785

# RFC 8785 §3.2.2.3 serialises numbers as IEEE 754 doubles; rfc8785 refuses integers it cannot represent exactly.
from deputy import bounded_json, clock
from deputy.exact_json import INT_MAX as INT_MAX
from deputy.exact_json import INT_MIN as INT_MIN
from deputy.exact_json import big_integers_as_digits

RECORD_VERSION = 1

RECORD_TYPES: frozenset[str] = frozenset(
    {
        "token.issued",
        "token.refreshed",
        "token.exchanged",
        "token.revoked",
        "client.registered",
        "client.approved",
        "client.removed",
        "consent.granted",
        "consent.revoked",
        "decision",
        "approval.decided",
        "call.outcome",
        "admin.action",
        "key.rotated",
        "log.started",
    }
)

RESERVED_FIELDS: frozenset[str] = frozenset({"v", "type", "id", "time"})

ArgumentsMode = Literal["store", "digest"]
ARGUMENTS_MODES: tuple[ArgumentsMode, ...] = ("store", "digest")



class RecordError(ValueError):
    """A record that is not valid, or not representable as RFC 8785 canonical JSON."""


def now_ms() -> int:
    return clock.now_ms()


def new_record(record_type: str, /, **fields: Any) -> dict[str, Any]:
    """A new record of ``record_type``, with a fresh id and the time; ``fields`` may not use the header's names."""
    if record_type not in RECORD_TYPES:
        raise RecordError(f"unknown audit record type {record_type!r}")
    reserved = RESERVED_FIELDS.intersection(fields)
    if reserved:
        raise RecordError(f"record fields {sorted(reserved)} are reserved for the record header")
    return {"v": RECORD_VERSION, "type": record_type, "id": uuid.uuid4().hex, "time": now_ms(), **fields}


def _fast_path_ok(value: Any) -> bool:
    """Whether compact sorted ``json.dumps`` is byte-identical to RFC 8785 for ``value`` (see the module docstring)."""
    # Exact type checks: subclasses (IntEnum, str enums, bool-as-int) may serialise differently in the two.
    kind = type(value)
    if kind is str or value is None or kind is bool:
        return True
    if kind is int:
        return bool(INT_MIN <= value <= INT_MAX)
    if kind is dict:
        return all(type(k) is str and k.isascii() and _fast_path_ok(v) for k, v in value.items())
    if kind is list or kind is tuple:
        return all(_fast_path_ok(v) for v in value)
    return False  # floats and anything else


def canonical(value: Any) -> bytes:
    """The RFC 8785 canonical JSON of ``value`` (a record, or any JSON value), as UTF-8 bytes.

    Raises :class:`RecordError` for anything JCS cannot represent (see the module docstring).
    """
    try:
        fast = _fast_path_ok(value)
    except RecursionError:
        raise RecordError("record is nested too deeply (or circular)") from None
    if fast:
        try:
            return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise RecordError("record contains a string that is not valid Unicode (a lone surrogate)") from None
    try:
        return bytes(rfc8785.dumps(value))
    except rfc8785.IntegerDomainError as exc:
        raise RecordError(f"{exc}; write integers beyond ±(2^53 - 1) as strings") from None
    except rfc8785.CanonicalizationError as exc:
        raise RecordError(f"record is not representable as RFC 8785 JSON: {exc}") from None
    except RecursionError:
        raise RecordError("record is nested too deeply (or circular)") from None


BIG_INTEGERS_FIELD = "arguments_big_integers"


def arguments_fields(arguments: Any, mode: ArgumentsMode) -> dict[str, Any]:
    """What a decision record keeps of a call's arguments, exactly (see the module docstring).

    ``{"arguments": <the arguments>}`` (``store``) or ``{"arguments": {"sha256": hex}}`` (``digest``, over the
    canonical JSON, so anyone holding the arguments can show they are the ones audited), plus
    ``{"arguments_big_integers": [pointer, ...]}`` when integers beyond ±(2^53 - 1) are written as digits.
    """
    if mode not in ARGUMENTS_MODES:
        raise RecordError(f"arguments mode must be one of {ARGUMENTS_MODES}, got {mode!r}")
    try:
        representable, pointers = big_integers_as_digits(arguments)
    except RecursionError:
        raise RecordError("arguments nested too deeply (or circular)") from None
    kept = representable if mode == "store" else {"sha256": hashlib.sha256(canonical(representable)).hexdigest()}
    return {"arguments": kept, BIG_INTEGERS_FIELD: pointers} if pointers else {"arguments": kept}


def recorded_arguments(record: Mapping[str, Any]) -> Any:
    """The arguments a ``store``-mode decision record holds, its big integers read back as the integers they were."""
    arguments: Any = copy.deepcopy(record.get("arguments"))
    for pointer in record.get(BIG_INTEGERS_FIELD) or []:
        tokens = [token.replace("~1", "/").replace("~0", "~") for token in str(pointer).split("/")[1:]]
        if not pointer or not tokens:
            raise RecordError(f"{BIG_INTEGERS_FIELD}: {pointer!r} does not point inside the arguments")
        parent: Any = arguments
        try:
            for token in tokens[:-1]:
                parent = parent[int(token)] if type(parent) is list else parent[token]
            last: Any = int(tokens[-1]) if type(parent) is list else tokens[-1]
            digits = parent[last]
        except (KeyError, IndexError, ValueError, TypeError):
            raise RecordError(f"{BIG_INTEGERS_FIELD}: nothing at {pointer!r} in the arguments") from None
        if type(digits) is not str or not _DIGITS.fullmatch(digits) or INT_MIN <= int(digits) <= INT_MAX:
            raise RecordError(f"{BIG_INTEGERS_FIELD}: {pointer!r} is not an integer beyond ±(2^53 - 1) in digits")
        parent[last] = int(digits)
    return arguments


_DIGITS = re.compile(r"-?[1-9][0-9]{15,}")


def parse_record(entry: bytes) -> Mapping[str, Any]:
    """Parse stored leaf bytes back into a record, checking it is a canonical version-1 record."""
    try:
        record = bounded_json.loads(entry)
    except (ValueError, UnicodeDecodeError) as exc:
        raise RecordError(f"audit entry is not JSON: {exc}") from None
    if not isinstance(record, dict) or record.get("v") != RECORD_VERSION or record.get("type") not in RECORD_TYPES:
        raise RecordError("audit entry is not a version 1 record of a known type")
    if canonical(record) != entry:
        raise RecordError("audit entry is not in canonical form")
    return record
