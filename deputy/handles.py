"""Random handles and their storage form.

Codes, refresh tokens and session ids are 256-bit random strings handed out
once; the database keeps only their SHA-256, so a read of the database does not
yield usable credentials. Comparisons of secrets use ``hmac.compare_digest``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets


def new_handle(nbytes: int = 32) -> str:
    return secrets.token_urlsafe(nbytes)


def handle_hash(handle: str) -> str:
    return hashlib.sha256(handle.encode()).hexdigest()


def same_secret(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
