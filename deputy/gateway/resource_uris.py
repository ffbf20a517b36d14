"""A resource URI is decided only in the one spelling every reader reads alike (RFC 3986 §6.2.2).

Cedar compares ``context.uri`` as the client wrote it. The upstream compares after its own URI handling: the SDKs'
resource templates percent-decode what a variable matched (RFC 6570 §3.2.1, read backwards), and the TypeScript
SDK's ``new URL()`` lower-cases scheme and host and removes dot-segments. So ``demo://users/%31`` is
``demo://users/1`` upstream, and a ``forbid`` on ``context.uri == "demo://users/1"`` would not see it. As with numbers
and JSON text (:mod:`deputy.gateway.strict_json`), Deputy refuses rather than normalises — how the upstream reads a
URI is not Deputy's to guess — so ``resources/read`` (and a completion's ``ref/resource``) is invalid params when its
URI:

- holds anything but printable ASCII (whitespace, a control, a non-ASCII character: an IRI, which RFC 3987 §3.1
  would map to another string);
- has a ``%`` not followed by two hexadecimal digits, or with lower-case ones (§2.1: upper case is the normal form);
- percent-encodes a character that may stand for itself in a path, query or fragment — an unreserved one (§2.3,
  §6.2.2.2) or one of ``!$&'()*+,;=:@`` — since a template variable decodes ``%21`` and ``!`` alike;
- has an upper-case scheme or host (§6.2.2.1), or a ``.`` or ``..`` path segment (§6.2.2.3).

What stays is what only one reading gives: ``%2F`` in a segment (not a ``/``), ``%20``, ``%25``, non-ASCII as UTF-8
octets in upper-case hex.
"""

from __future__ import annotations

import re
import string
from urllib.parse import urlsplit

HEX_DIGITS = frozenset(string.hexdigits)
STANDS_FOR_ITSELF = frozenset(string.ascii_letters + string.digits + "-._~" + "!$&'()*+,;=:@")
_ESCAPE = re.compile("%[0-9A-F]{2}")


def uri_problem(uri: str) -> str | None:
    """Why ``uri`` is not in the one spelling every reader reads alike (module docstring); None when it is."""
    if not all(0x21 <= ord(char) <= 0x7E for char in uri):
        return "holds whitespace, a control or a non-ASCII character (an IRI, not a URI: RFC 3987 §3.1)"
    at = uri.find("%")
    while at != -1:
        digits = uri[at + 1:at + 3]
        if len(digits) != 2 or not HEX_DIGITS.issuperset(digits):
            return "has a '%' not followed by two hexadecimal digits (RFC 3986 §2.1)"
        if digits != digits.upper():
            return "has lower-case percent-encoding digits (RFC 3986 §2.1, §6.2.2.1: upper case)"
        if chr(int(digits, 16)) in STANDS_FOR_ITSELF:
            return (f"percent-encodes {chr(int(digits, 16))!r}, which stands for itself (RFC 3986 §2.3, §6.2.2.2): "
                    "an upstream reads both spellings as one")
        at = uri.find("%", at + 3)
    scheme, colon, _ = uri.partition(":")
    if colon and scheme != scheme.lower():
        return "has an upper-case scheme (RFC 3986 §6.2.2.1)"
    try:
        parts = urlsplit(uri)
    except ValueError as exc:  # e.g. an unbalanced IPv6 bracket
        return f"is not a URI ({exc})"
    host = _ESCAPE.sub("", parts.netloc.rpartition("@")[2])  # an escape's digits are upper case (checked above)
    if host != host.lower():
        return "has an upper-case host (RFC 3986 §6.2.2.1)"
    if any(segment in (".", "..") for segment in parts.path.split("/")):
        return "has a '.' or '..' path segment (RFC 3986 §6.2.2.3)"
    return None
