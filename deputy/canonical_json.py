"""The RFC 8785 (JSON Canonicalization Scheme) bytes of a JSON value: the one spelling Deputy hashes.

Wherever a value's identity is its bytes, they come from :func:`canonical_json`: the audit record that becomes an
RFC 9162 §2.1.1 leaf (:mod:`deputy.audit.records`), the call and actor-chain hashes an approval is bound to
(:mod:`deputy.storage.approvals`), the name of an argument a policy may only see as opaque
(:mod:`deputy.policy.arguments`) and the policy schema's version (:mod:`deputy.policy.schema`). One spelling, so the
same value always has the same hash, whoever computes it.

Two paths, one output:

- The general path is ``rfc8785.dumps``: object members sorted by their names' UTF-16 code units (RFC 8785 §3.2.3),
  numbers in the ECMAScript shortest form (§3.2.2.3), strings with the minimal escapes (§3.2.2.2), UTF-8 (§3.2.4).
- The fast path is :func:`fast_path_text`, compact sorted ``json.dumps`` with ``ensure_ascii=False``, taken only
  inside a domain where it gives the very same bytes (:func:`takes_fast_path`): every object key an ASCII ``str``
  (UTF-16 order is then code point order, which is what ``sort_keys`` uses), no floats (JSON's and JCS's spellings
  differ: ``1.0``/``1``, ``1e+21``/``1e21``, ``-0.0``/``0``), every integer a plain ``int`` within JCS's exact range
  ±(2^53 - 1) (RFC 7493 §2.2), and otherwise only ``str``/``bool``/``None``/``list``/``tuple``/``dict``. Both
  escape exactly ``"``, ``\\``, and U+0000..U+001F with the same short forms and lowercase ``\\u00xx``; neither
  escapes anything else. Exact types: subclasses (``IntEnum``, str enums, ``bool`` as ``int``) may serialise
  differently in the two. A typical 0.5 kB audit record takes ~10 µs on the fast path against ~45 µs through
  ``rfc8785``. ``tests/unit/test_canonical_json.py`` checks the identity by property tests and RFC 8785's vectors.

What JCS cannot represent — an integer beyond ±(2^53 - 1), NaN or infinity (§3.2.2.3), a lone surrogate (§3.2.2.2),
a non-string key, a type JSON has no value for, nesting Python cannot walk — raises :class:`NotCanonicalJson`, never
a serialisation of something else. Integers beyond that range are kept exactly by :mod:`deputy.exact_json`.
"""

from __future__ import annotations

import json
from typing import Any

import rfc8785

INT_MAX = 2**53 - 1  # RFC 7493 §2.2: the integers an IEEE 754 double holds exactly
INT_MIN = -(2**53) + 1

# allow_nan=False: a value outside the domain that still reaches this encoder (a caller's own proof gone wrong)
# fails rather than spelling NaN, which is not JSON at all.
_FAST = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


class NotCanonicalJson(ValueError):
    """A value that has no RFC 8785 canonical form; the message says why."""


def takes_fast_path(value: Any) -> bool:
    """Whether :func:`fast_path_text` gives ``value``'s RFC 8785 form (see the module docstring).

    Raises ``RecursionError`` on a circular or too deeply nested value.
    """
    kind = type(value)
    if kind is str or value is None or kind is bool:
        return True
    if kind is int:
        return bool(INT_MIN <= value <= INT_MAX)
    # The members that are strings, null or booleans (most of a record's) are passed here without a call each:
    # this runs on every audit record, and those calls were most of its cost.
    if kind is dict:
        for key, member in value.items():
            if type(key) is not str or not key.isascii():
                return False
            kind = type(member)
            if kind is not str and member is not None and kind is not bool and not takes_fast_path(member):
                return False
        return True
    if kind is list or kind is tuple:
        for member in value:
            kind = type(member)
            if kind is not str and member is not None and kind is not bool and not takes_fast_path(member):
                return False
        return True
    return False  # floats and anything else


def fast_path_text(value: Any) -> str:
    """Compact sorted JSON text of ``value``: its RFC 8785 form *only* when :func:`takes_fast_path` holds for it.

    For a caller that has already proved the domain another way (the audit verifier's quick check parses with
    floats and out-of-range integers refused); anyone else calls :func:`canonical_json`.
    """
    return _FAST.encode(value)


def canonical_json(value: Any) -> bytes:
    """The RFC 8785 canonical JSON of ``value``, as UTF-8 bytes; :class:`NotCanonicalJson` when it has none."""
    try:
        if takes_fast_path(value):
            return fast_path_text(value).encode("utf-8")
        return bytes(rfc8785.dumps(value))
    except RecursionError:
        raise NotCanonicalJson("nested too deeply (or circular)") from None
    except rfc8785.IntegerDomainError:
        # Not rfc8785's message: it quotes the integer, and this one is logged (an argument's value must not be).
        raise NotCanonicalJson("an integer beyond ±(2^53 - 1); write such integers as strings") from None
    except rfc8785.CanonicalizationError as exc:
        raise NotCanonicalJson(str(exc)) from None
    except UnicodeEncodeError:  # the fast path's UTF-8, or rfc8785 sorting a key by its UTF-16
        raise NotCanonicalJson("a string that is not valid Unicode (a lone surrogate)") from None
