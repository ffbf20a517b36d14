"""W3C Trace Context (Level 1, Recommendation; Level 2 for the ``random`` flag and the ``tracestate`` key grammar):
reading a client's ``traceparent`` and ``tracestate``, and what Deputy sends upstream.

- ``traceparent`` (§3.2) is read strictly: ``version "-" trace-id "-" parent-id "-" trace-flags`` in lowercase hex;
  version ``ff`` is invalid; version ``00`` is exactly 55 characters (an extra field makes it invalid), a later
  version is read as ``00`` is when the 56th character is ``-`` or there is none (§3.2.4); an all-zero trace-id or
  parent-id is invalid (§3.2.2.3, §3.2.2.4). A header that fails any of this, or that comes twice, is ignored and a
  new trace started (§3.2.4 "restart the trace"); its ``tracestate`` is then not read (§3.3.3).
- ``tracestate`` (§3.3) is carried only when every list-member is well formed and its keys are unique; more than
  32 list-members makes it invalid (§3.3.1.1), and a header longer than :data:`MAX_TRACESTATE_INPUT` is not read
  at all. What is carried is cut to 512 characters as §3.3.1.5 says: members over 128 characters go first, then
  members from the end.
- Upstream (§3.2, "mutating the traceparent field") Deputy sends its own ``traceparent``: the same trace-id and
  Deputy's upstream span as parent-id, version ``00``, flags with only ``sampled`` and ``random`` kept (unknown
  flags are set to zero, §3.2.2.5). The client's header is never forwarded as it came.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from dataclasses import dataclass

STAGES = ("authenticate", "decide", "audit", "upstream")
MAX_TRACEPARENT_INPUT = 512  # a longer traceparent is not parsed: no valid version-00 header is anywhere near it
MAX_TRACESTATE_INPUT = 8192  # a longer tracestate (all its header lines together) is not parsed
MAX_TRACESTATE_MEMBERS = 32
TRACESTATE_CARRIED = 512
LONG_MEMBER = 128

FLAG_SAMPLED = 0x01
FLAG_RANDOM = 0x02  # Level 2: the trace-id's rightmost 7 bytes are random
_HEX = frozenset("0123456789abcdef")
_KEY = r"(?:[a-z][a-z0-9_\-*/]{0,255}|[a-z0-9][a-z0-9_\-*/]{0,240}@[a-z][a-z0-9_\-*/]{0,13})"
_VALUE = r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
_MEMBER = re.compile(f"({_KEY})={_VALUE}")


@dataclass(frozen=True, slots=True)
class TraceContext:
    """One request's place in a trace: chosen when the request starts, before anything is known of its end."""

    trace_id: str  # 32 lowercase hex
    span_id: str  # 16 lowercase hex: the request span
    upstream_span_id: str  # 16 lowercase hex: the upstream child span, the parent-id sent upstream
    parent_span_id: str | None  # the client's span, from its traceparent
    sampled: bool
    tracestate: str | None
    random_trace_id: bool = False  # the Level 2 random flag, kept as the trace-id is kept

    @property
    def flags(self) -> int:
        return (FLAG_SAMPLED if self.sampled else 0) | (FLAG_RANDOM if self.random_trace_id else 0)

    def upstream_traceparent(self) -> bytes:
        """The ``traceparent`` sent upstream: this trace, Deputy's upstream span as parent (§3.2)."""
        return f"00-{self.trace_id}-{self.upstream_span_id}-{self.flags:02x}".encode("ascii")

    def upstream_tracestate(self) -> bytes | None:
        return self.tracestate.encode("ascii") if self.tracestate else None


def parse_traceparent(value: bytes) -> tuple[str, str, int] | None:
    """``(trace_id, parent_id, flags)`` of a valid ``traceparent``; None for anything else (module docstring)."""
    if len(value) > MAX_TRACEPARENT_INPUT:
        return None
    try:
        text = value.decode("ascii").strip(" \t")
    except UnicodeDecodeError:
        return None
    if len(text) < 55 or text[2] != "-" or text[35] != "-" or text[52] != "-":
        return None
    version, trace_id, parent_id, flags = text[:2], text[3:35], text[36:52], text[53:55]
    if not _hex(version) or version == "ff":
        return None
    if len(text) > 55 and (version == "00" or text[55] != "-"):
        return None
    if not (_hex(trace_id) and _hex(parent_id) and _hex(flags)):
        return None
    if trace_id == "0" * 32 or parent_id == "0" * 16:
        return None
    return trace_id, parent_id, int(flags, 16)


def parse_tracestate(value: bytes) -> str | None:
    """The ``tracestate`` to carry (well formed, unique keys, at most 32 members, cut to 512 characters); None when
    it is absent, empty, too long to read or invalid (§3.3: then it is dropped whole)."""
    if len(value) > MAX_TRACESTATE_INPUT:
        return None
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        return None
    members: list[str] = []
    keys: set[str] = set()
    for raw in text.split(","):
        member = raw.strip(" \t")
        if not member:
            continue  # empty list-members are allowed and skipped (§3.3.1.1)
        match = _MEMBER.fullmatch(member)
        if match is None or match.group(1) in keys:
            return None
        keys.add(match.group(1))
        members.append(member)
    if not members or len(members) > MAX_TRACESTATE_MEMBERS:
        return None
    if len(",".join(members)) > TRACESTATE_CARRIED:
        members = [m for m in members if len(m) <= LONG_MEMBER]
        while members and len(",".join(members)) > TRACESTATE_CARRIED:
            members.pop()
    return ",".join(members) or None


def trace_headers(headers: Iterable[tuple[bytes, bytes]]) -> tuple[bytes | None, bytes | None]:
    """A request's ``traceparent`` and ``tracestate`` (ASGI header pairs, lower-case names): two ``traceparent``
    lines make it invalid (``b""``), several ``tracestate`` lines are one list (RFC 9110 §5.3)."""
    parents: list[bytes] = []
    states: list[bytes] = []
    for name, value in headers:
        if name == b"traceparent":
            parents.append(value)
        elif name == b"tracestate":
            states.append(value)
    parent = None if not parents else parents[0] if len(parents) == 1 else b""
    return parent, (b",".join(states) if states else None)


def _hex(text: str) -> bool:
    return all(c in _HEX for c in text)


def new_id(bits: int) -> str:
    value = 0
    while value == 0:  # all zero is the one invalid id
        value = random.getrandbits(bits)
    return f"{value:0{bits // 4}x}"
