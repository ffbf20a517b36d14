"""Outside JSON and TOML read with a bound on nesting, checked before the recursive parser sees the text.

Python's ``json`` and ``tomllib`` parse by recursive descent: a text nested a few thousand levels deep
(``[[[[…``, two bytes a level) exhausts the interpreter's stack and raises ``RecursionError``, which no caller
expects — a CLI dies with a traceback, a request handler answers 500, a reader task ends. RFC 8259 §9 lets a
parser "set limits on the maximum depth of nesting", and RFC 7493 (I-JSON) exists so that such limits can be
relied on; TOML v1.0.0 sets none, so Deputy sets one for both.

Every text Deputy did not write itself — a request body, a document fetched from a client or an issuer, a
JOSE header or payload (RFC 7515 §7.1), an upstream's answer, a file given to the CLI, a configuration
file — is parsed here:

- :func:`loads` checks depth with one linear scan (:func:`check_depth`) that counts ``[`` and ``{`` outside
  strings, then hands the text to ``json.loads``. For a valid JSON prefix the scan is exact (a string is the
  only token that can hold a bracket), and a recursive-descent parser stops at its first error, so it never
  recurses deeper than the scan counted. Only a text with more brackets than the limit is scanned at all.
- :func:`loads_toml` does the same for TOML (strings of all four kinds and comments skipped), then walks the
  parsed value without recursion, since dotted keys and table headers (``a.b.c…``) nest tables without
  recursing in the parser — but would in whatever reads the result.
- :func:`check_jws_depth` bounds a compact JWS's header and payload before a JOSE library parses them.

A refusal is :class:`TooDeep` (a ``json.JSONDecodeError``, hence a ``ValueError``) or :class:`TomlTooDeep` (a
``tomllib.TOMLDecodeError``): every caller that already refuses malformed input refuses these the same way.
The gateway's JSON-RPC reader (:mod:`deputy.gateway.strict_json`) uses the same scan with its own limit.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import tomllib
from typing import Any

MAX_DEPTH = 128  # far beyond what any document Deputy reads needs (a call's arguments: 64), far below the stack

_JSON_TOKENS = re.compile(
    r'"(?:[^"\\]++|\\.)*+(?:"|\\?\Z)'  # a string, or an unterminated one to the end (never rescanned)
    r"|[\[\]{}]",
    re.DOTALL,
)
_TOML_TOKENS = re.compile(
    r'"""(?:[^"\\]++|\\.|"(?!""))*+(?:"{3,5}|\\?\Z)'  # multi-line basic: up to two quotes may end it
    r"|'''(?:[^']++|'(?!''))*+(?:'{3,5}|\Z)"  # multi-line literal
    r'|"(?:[^"\\\n]++|\\.)*+"?'  # basic (unterminated: to the line's end, where the parser stops)
    r"|'[^'\n]*+'?"  # literal
    r"|#[^\n]*+"  # comment
    r"|[\[\]{}]",
    re.DOTALL,
)


class TooDeep(json.JSONDecodeError):
    """A JSON text nested deeper than the limit; ``pos`` is where the limit was passed."""

    def __init__(self, limit: int, document: str, position: int) -> None:
        super().__init__(f"JSON nested deeper than {limit} levels", document, position)
        self.limit = limit


class TomlTooDeep(tomllib.TOMLDecodeError):
    """A TOML document whose arrays, inline tables or tables nest deeper than the limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"TOML nested deeper than {limit} levels")
        self.limit = limit


def loads(document: str | bytes | bytearray, *, max_depth: int = MAX_DEPTH, **options: Any) -> Any:
    """``json.loads(document, **options)``, refusing nesting beyond ``max_depth`` first (:class:`TooDeep`).

    Bytes are decoded as ``json.loads`` decodes them (UTF-8, -16 or -32 by their first bytes); a caller that
    must take UTF-8 only decodes them itself (RFC 8259 §8.1).
    """
    text = document if isinstance(document, str) else _decoded(bytes(document))
    check_depth(text, max_depth)
    return json.loads(text, **options)


def check_depth(text: str, max_depth: int = MAX_DEPTH) -> None:
    """Raise :class:`TooDeep` if ``text`` opens more than ``max_depth`` arrays or objects at once."""
    if text.count("[") + text.count("{") <= max_depth:
        return  # cannot be deeper: the common case costs two C scans
    depth = 0
    for token in _JSON_TOKENS.finditer(text):
        at = token.start()
        char = text[at]
        if char == "[" or char == "{":
            depth += 1
            if depth > max_depth:
                raise TooDeep(max_depth, text, at)
        elif char != '"':
            depth -= 1


def loads_toml(text: str, *, max_depth: int = MAX_DEPTH) -> dict[str, Any]:
    """``tomllib.loads(text)``, refusing nesting beyond ``max_depth`` (:class:`TomlTooDeep`)."""
    if text.count("[") + text.count("{") > max_depth:
        depth = 0
        for token in _TOML_TOKENS.finditer(text):
            char = text[token.start()]
            if char == "[" or char == "{":
                depth += 1
                if depth > max_depth:
                    raise TomlTooDeep(max_depth)
            elif char == "]" or char == "}":
                depth -= 1
    document = tomllib.loads(text)
    if not value_within_depth(document, max_depth):
        raise TomlTooDeep(max_depth)
    return document


def value_within_depth(value: Any, max_depth: int = MAX_DEPTH) -> bool:
    """Whether a parsed value nests at most ``max_depth`` dicts and lists (walked a level at a time, no recursion)."""
    level = [value] if isinstance(value, dict | list) else []
    depth = 0
    while level:
        depth += 1
        if depth > max_depth:
            return False
        level = [child for node in level for child in (node.values() if isinstance(node, dict) else node)
                 if isinstance(child, dict | list)]
    return True


def check_jws_depth(token: str, max_depth: int = MAX_DEPTH) -> None:
    """Raise :class:`TooDeep` if the header or payload of a compact JWS (RFC 7515 §7.1) nests too deeply.

    Called before a JOSE library parses them with ``json.loads``; a part that is not base64url or not text is
    left for the library to refuse.
    """
    for part in token.split(".", 2)[:2]:
        try:
            raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
            text = _decoded(raw)
        except (binascii.Error, ValueError):
            continue
        check_depth(text, max_depth)


def _decoded(raw: bytes) -> str:
    # What json.loads does with bytes, so that the text checked is the text parsed.
    return raw.decode(json.detect_encoding(raw), "surrogatepass")
