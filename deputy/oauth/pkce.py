"""PKCE with S256 only (RFC 7636 §4.2, §4.6; OAuth 2.1 §4.1.1, §7.5.2).

``plain`` is refused: the MCP spec requires S256 where the client can use it,
and every MCP client can.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

# RFC 7636 §4.1: 43-128 characters of the unreserved set.
_VERIFIER = re.compile(r"[A-Za-z0-9\-._~]{43,128}")
# base64url(SHA-256) without padding is always 43 characters.
_CHALLENGE = re.compile(r"[A-Za-z0-9\-_]{43}")


def is_valid_challenge(challenge: str) -> bool:
    return bool(_CHALLENGE.fullmatch(challenge))


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def verifier_matches(verifier: str, challenge: str) -> bool:
    if not _VERIFIER.fullmatch(verifier):
        return False
    return hmac.compare_digest(s256(verifier), challenge)
