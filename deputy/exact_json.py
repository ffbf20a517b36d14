"""JSON values with integers beyond I-JSON's exact range written as their digits, for RFC 8785 canonical JSON
(:func:`deputy.canonical_json.canonical_json`).

RFC 8785 §3.2.2.3 serialises numbers as IEEE 754 doubles, so it cannot carry an integer beyond ±(2^53 - 1)
(RFC 7493 §2.2) exactly. Deputy accepts integers up to signed 64 bits in a call's arguments; wherever such a value is
canonicalised — the audit record of a decision, the hash an approval is bound to, the name of an argument a policy
sees as opaque — each such integer is written as its decimal digits (a string), and the RFC 6901 pointers to those
strings travel beside the value. Value and pointers together are injective: the integer 9007199254740993 and the
string "9007199254740993" differ in the pointers, so neither can stand in for the other.
"""

from __future__ import annotations

from typing import Any

from deputy.canonical_json import INT_MAX, INT_MIN


def big_integers_as_digits(value: Any) -> tuple[Any, list[str]]:
    """``value`` with each integer beyond ±(2^53 - 1) as its digits, and the sorted pointers to them.

    Unchanged parts are shared with ``value``, not copied. Raises ``RecursionError`` on a circular value.
    """
    pointers: list[str] = []
    return _as_digits(value, [], pointers), sorted(pointers)


def _as_digits(value: Any, path: list[str], pointers: list[str]) -> Any:
    kind = type(value)
    if kind is int:
        if INT_MIN <= value <= INT_MAX:
            return value
        pointers.append("".join(f"/{token}" for token in path))
        return str(value)
    if kind is dict:
        copied: dict[str, Any] | None = None
        for key, item in value.items():
            path.append(str(key).replace("~", "~0").replace("/", "~1"))  # RFC 6901 §3 escaping
            kept = _as_digits(item, path, pointers)
            path.pop()
            if kept is not item:
                copied = dict(value) if copied is None else copied
                copied[key] = kept
        return value if copied is None else copied
    if kind is list:
        items: list[Any] | None = None
        for index, item in enumerate(value):
            path.append(str(index))
            kept = _as_digits(item, path, pointers)
            path.pop()
            if kept is not item:
                items = list(value) if items is None else items
                items[index] = kept
        return value if items is None else items
    return value
