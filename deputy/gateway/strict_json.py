"""Bytes → one JSON value, read so that every later reader of the same bytes sees the same value.

The gateway forwards the bytes it received, while a policy decides on, and the audit log
records, the value read here (:mod:`deputy.gateway.jsonrpc`). RFC 8259 leaves several
readings to each parser; this reader refuses every text on which readers may disagree:

- UTF-8 only (RFC 8259 §8.1): invalid UTF-8 and a byte order mark are refused, and so are
  escaped lone surrogates (``"\\ud800"``, §8.2), which are not Unicode text at all;
- duplicate object keys at any depth (§4 leaves their meaning to the parser: one reader
  keeps the first, another the last, so a policy could see one value and the upstream
  another); ``NaN``/``Infinity`` (not JSON); nesting beyond :data:`MAX_DEPTH` levels (counted
  before decoding, :func:`deputy.bounded_json.check_depth`). These raise :class:`NotJson`.
- numbers (§6 leaves range and precision to each reader; RFC 7493 §2.2): an integer must
  fit in signed 64 bits (what a policy's ``Long`` holds; Python holds it exactly) — and, read
  for an upstream that may read numbers as doubles (``doubles=True``: a JavaScript server,
  ``servers.NAME.big_integers = "refuse"``), within ±(2^53 - 1), the integers every double holds
  exactly (RFC 7493 §2.2): ``9007199254740993`` is that number to Cedar and ``9007199254740992``
  to ``JSON.parse``, so a ``forbid`` on the one would be passed by sending the other; a number
  with a fraction or an exponent must be a finite double whose shortest spelling denotes
  exactly the decimal its digits say (``0.1`` and ``1.50`` pass; ``0.10000000000000001``,
  ``9007199254740993.0`` and ``1e-400`` read as one number to a reader of doubles and as
  another to a reader of decimals, and ``1e400`` is no double); negative zero (``-0``,
  ``-0.0``) is refused, since the audit record's RFC 8785 form writes it as ``0`` (§3.2.2.3)
  and some readers tell the two apart. These raise :class:`InexactNumber`, naming the
  number by its RFC 6901 pointer.

Cost: the happy path is one ``json`` decode (the C scanner, calling back per object and
per number). A float costs a ``repr``, and two ``Decimal`` only when its digits are not
already the shortest ones; the depth scan and the surrogate walk run only when cheap counts
of the text say they could matter; only a refused number costs a second decode,
to find where it stood.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any, NoReturn

from deputy.bounded_json import TooDeep, check_depth

MAX_DEPTH = 64
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
SAFE_INTEGER = 2**53 - 1  # RFC 7493 §2.2: beyond it, integers a double cannot hold exactly
UTF8_BOM = b"\xef\xbb\xbf"


class NotJson(Exception):
    """The bytes are not one JSON text that every reader reads alike."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InexactNumber(Exception):
    """A number not held exactly as its digits say; ``document`` is the rest of the text, as read."""

    def __init__(self, pointer: str, reason: str, document: Any) -> None:
        self.message = f"the number at {pointer or 'the top level'} {reason}"
        super().__init__(self.message)
        self.pointer = pointer
        self.document = document


def read_json(body: bytes, *, doubles: bool = False) -> Any:
    """The one JSON value in ``body``; raises :class:`NotJson` or :class:`InexactNumber`. ``doubles``: a later
    reader may read numbers as doubles, so an integer beyond ±(2^53 - 1) is inexact too."""
    if body.startswith(UTF8_BOM):
        _not_json("the body must be UTF-8 without a byte order mark")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        _not_json("the body is not valid UTF-8")
    try:
        check_depth(text, MAX_DEPTH)
        document = (_DOUBLES_DECODER if doubles else _DECODER).decode(text)
    except TooDeep:
        _not_json(f"JSON nested deeper than {MAX_DEPTH} levels")
    except _Unfaithful:
        _refuse_number(text, _DOUBLES_MARKING_DECODER if doubles else _MARKING_DECODER)
    except ValueError:  # json.JSONDecodeError
        _not_json("the body is not valid JSON")
    if (type(document) is dict or type(document) is list) and ("\\ud" in text or "\\uD" in text):
        _check_surrogates(document)
    return document


def _not_json(message: str) -> NoReturn:
    raise NotJson(message)


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        seen: set[str] = set()
        for key, _value in pairs:
            if key in seen:
                _not_json(f"duplicate key {json.dumps(key[:64])} in a JSON object")
            seen.add(key)
    return document


def _constant(name: str) -> NoReturn:
    _not_json(f"{name} is not a JSON number")


class _Unfaithful(Exception):
    """Raised by the number hooks; like NotJson, not a ValueError, which the decoder's own errors are."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_NEGATIVE_ZERO = "is negative zero, which the audit record cannot tell from 0 (RFC 8785 §3.2.2.3)"


def _integer(text: str) -> int:
    if len(text) < 19:  # 18 digits, or a sign and 17, always fit
        if text == "-0":
            raise _Unfaithful(_NEGATIVE_ZERO)
        return int(text)
    value = int(text) if len(text) <= 20 else None  # never convert thousands of digits
    if value is None or value < INT64_MIN or value > INT64_MAX:
        raise _Unfaithful("is an integer outside the signed 64-bit range")
    return value


def _integer_for_doubles(text: str) -> int:
    value = _integer(text)
    if len(text) > 15 and not -SAFE_INTEGER <= value <= SAFE_INTEGER:  # 15 characters never pass 2^53
        raise _Unfaithful("is an integer beyond ±(2^53 - 1), which a reader of doubles (JavaScript) reads as another "
                          "number (RFC 7493 §2.2); this server's big_integers is \"refuse\"")
    return value


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _Unfaithful("is too large for a double")
    shortest = repr(value)
    if shortest != text:
        try:
            exact = Decimal(text) == Decimal(shortest)
        except InvalidOperation:  # an exponent beyond what Decimal takes is never an exact double's
            exact = False
        if not exact:
            raise _Unfaithful(f"reads as the double {shortest}, not as the number its digits say")
    if value == 0 and text[0] == "-":
        raise _Unfaithful(_NEGATIVE_ZERO)
    return value


_DECODER = json.JSONDecoder(object_pairs_hook=_object, parse_constant=_constant, parse_int=_integer,
                            parse_float=_float)
_DOUBLES_DECODER = json.JSONDecoder(object_pairs_hook=_object, parse_constant=_constant,
                                    parse_int=_integer_for_doubles, parse_float=_float)


class _Marked:
    """A refused number, where it stood, in the second decode."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _marking(hook: Callable[[str], Any]) -> Callable[[str], Any]:
    def mark(text: str) -> Any:
        try:
            return hook(text)
        except _Unfaithful as unfaithful:
            return _Marked(f"({text[:40]}{'…' if len(text) > 40 else ''}) {unfaithful.reason}")
    return mark


_MARKING_DECODER = json.JSONDecoder(object_pairs_hook=_object, parse_constant=_constant,
                                    parse_int=_marking(_integer), parse_float=_marking(_float))
_DOUBLES_MARKING_DECODER = json.JSONDecoder(object_pairs_hook=_object, parse_constant=_constant,
                                            parse_int=_marking(_integer_for_doubles), parse_float=_marking(_float))


def _refuse_number(text: str, marking: json.JSONDecoder) -> NoReturn:
    """Raise :class:`InexactNumber` for the first refused number in document order (the text parsed once)."""
    try:
        document = marking.decode(text)  # read_json checked its depth
    except ValueError:
        _not_json("the body is not valid JSON")
    stack: list[tuple[str, Any]] = [("", document)]
    while stack:
        pointer, node = stack.pop()
        if type(node) is _Marked:
            raise InexactNumber(pointer, node.reason, document)
        if type(node) is dict:
            stack.extend((f"{pointer}/{pointer_token(key)}", value) for key, value in reversed(node.items()))
        elif type(node) is list:
            stack.extend((f"{pointer}/{index}", value) for index, value in reversed(list(enumerate(node))))
    raise InexactNumber("", "cannot be held exactly", document)  # the hooks are pure: never reached


def pointer_token(key: str) -> str:
    """An object key as an RFC 6901 reference token (§4: ``~`` as ``~0``, ``/`` as ``~1``)."""
    return key.replace("~", "~0").replace("/", "~1")


def _check_surrogates(document: dict[str, Any] | list[Any]) -> None:
    """Refuse strings holding a lone surrogate (escaped in the JSON text, so valid UTF-8 but not Unicode)."""
    stack: list[Any] = [document]
    while stack:
        node = stack.pop()
        if type(node) is dict:
            texts = [*node, *(value for value in node.values() if type(value) is str)]
            stack.extend(value for value in node.values() if type(value) is dict or type(value) is list)
        else:
            texts = [value for value in node if type(value) is str]
            stack.extend(value for value in node if type(value) is dict or type(value) is list)
        for text in texts:
            if not text.isascii():
                try:
                    text.encode("utf-8")
                except UnicodeEncodeError:
                    _not_json("a string holds a lone surrogate (not Unicode text)")
