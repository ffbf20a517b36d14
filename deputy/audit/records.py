"""Audit records: the versioned JSON objects that become the leaves of the audit log.

Every record is a JSON object ``{"v": 1, "type": ..., "id": <uuid4 hex>, "time": <int ms since the epoch>,
...fields}``, ``type`` one of :data:`RECORD_TYPES`. A record is stored and hashed (RFC 9162 §2.1.1: the leaf
hash is ``SHA-256(0x00 || entry)``) as its RFC 8785 (JSON Canonicalization Scheme) serialisation, so that a
verifier can re-derive the exact leaf bytes from the parsed JSON: one record, one spelling, one hash.

Canonicalisation, :func:`canonical`, is :func:`deputy.canonical_json.canonical_json` (one general path through
``rfc8785``, one fast path where compact sorted ``json.dumps`` gives the same bytes), its refusals as
:class:`RecordError`.

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

A call's ``decision`` and ``call.outcome`` records may also hold ``trace_id``: the W3C Trace Context trace-id (32
lowercase hex) of the call, present only when the call had one (:mod:`deputy.gateway.audit_stage`); another
optional field that extends version 1 compatibly, hashed like every other.
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
from collections.abc import Mapping
from typing import Any, Literal

from deputy import bounded_json, clock
from deputy.canonical_json import INT_MAX as INT_MAX
from deputy.canonical_json import INT_MIN as INT_MIN
from deputy.canonical_json import NotCanonicalJson, canonical_json
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
        "user.disabled",
        "user.enabled",
        "key.rotated",
        "log.started",
        "signin.succeeded",
        "signin.failed",
        # A user's connection to a credentials = "oauth" upstream (deputy.connections): a token's SHA-256 at most.
        "connection.created",
        "connection.refreshed",
        "connection.broken",
        "connection.revoked",
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
    return {"v": RECORD_VERSION, "type": record_type, "id": uuid4_hex(), "time": now_ms(), **fields}


def uuid4_hex() -> str:
    """``uuid.uuid4().hex``, the same 122 random bits and the same version and variant bits (RFC 9562 §5.4), without
    the UUID object (two records a call: a third of the cost was the object)."""
    octets = bytearray(os.urandom(16))
    octets[6] = octets[6] & 0x0F | 0x40  # version 4
    octets[8] = octets[8] & 0x3F | 0x80  # variant 10
    return octets.hex()


def canonical(value: Any) -> bytes:
    """The RFC 8785 canonical JSON of ``value`` (a record, or any JSON value), as UTF-8 bytes.

    Raises :class:`RecordError` for anything JCS cannot represent (see the module docstring).
    """
    try:
        return canonical_json(value)
    except NotCanonicalJson as exc:
        raise RecordError(f"record is not representable as RFC 8785 JSON: {exc}") from None


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
        if pointer == "":  # RFC 6901 §5: the whole value, for arguments that are one big integer
            arguments = _big_integer(arguments, pointer)
            continue
        if type(pointer) is not str or not pointer.startswith("/"):
            raise RecordError(f"{BIG_INTEGERS_FIELD}: {pointer!r} does not point inside the arguments")
        tokens = [token.replace("~1", "/").replace("~0", "~") for token in pointer.split("/")[1:]]
        parent: Any = arguments
        try:
            for token in tokens[:-1]:
                parent = parent[int(token)] if type(parent) is list else parent[token]
            last: Any = int(tokens[-1]) if type(parent) is list else tokens[-1]
            digits = parent[last]
        except (KeyError, IndexError, ValueError, TypeError):
            raise RecordError(f"{BIG_INTEGERS_FIELD}: nothing at {pointer!r} in the arguments") from None
        parent[last] = _big_integer(digits, pointer)
    return arguments


def _big_integer(digits: Any, pointer: str) -> int:
    if type(digits) is not str or not _DIGITS.fullmatch(digits) or INT_MIN <= int(digits) <= INT_MAX:
        raise RecordError(f"{BIG_INTEGERS_FIELD}: {pointer!r} is not an integer beyond ±(2^53 - 1) in digits")
    return int(digits)


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
