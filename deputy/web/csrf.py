"""CSRF protection of Deputy's forms: tokens bound to the browser and the form, and the Origin check.

A form's token is ``HMAC-SHA256(key, purpose ‖ binding)`` (OAuth 2.1 §7.12, RFC 6749
§10.12; the "signed double-submit" pattern). The *purpose* names the form (``login``,
``consent``, ``approval``, and the connection pages' ``connect`` and ``disconnect``), so
a token for one form is worthless on another: a consent form's token never starts or ends
a connection, a Connect button's never grants consent. The
*binding* is what only this browser holds: its login session id on the forms of a
signed-in person, and on the sign-in form (before there is a session) a random
pre-session cookie. Without the key, planting a cookie does not help: the token for an
attacker-chosen cookie cannot be computed, and a token from another session or another
form does not verify. Tokens are compared in constant time.

The key is 32 random bytes in ``csrf.key`` in the data directory (0600), shared by the
replicas that share the directory, like the token signing keys.

A POST whose ``Origin`` header is present must come from Deputy's own origin (RFC 6454
§7, Fetch "Origin header"): browsers send it on form posts, so a foreign or ``null``
origin is a cross-site request whatever its cookies say.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from pathlib import Path
from typing import Literal

from deputy.origins import serialized_origin

Purpose = Literal["login", "consent", "approval", "connect", "disconnect"]
KEY_FILE = "csrf.key"


class CsrfTokens:
    def __init__(self, key: bytes) -> None:
        if len(key) < 32:
            raise ValueError("the CSRF key must be at least 32 bytes")
        self._key = key

    @classmethod
    def from_data_dir(cls, data_dir: Path) -> CsrfTokens:
        path = data_dir / KEY_FILE
        if not path.exists():
            data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            # Written whole under another name, then linked into place: a reader never sees a
            # half-written key, and when two replicas start at once the first link wins for both.
            draft = data_dir / f".{KEY_FILE}.{os.getpid()}.{os.urandom(4).hex()}"
            fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(os.urandom(32))
            try:
                os.link(draft, path)
            except FileExistsError:
                pass
            finally:
                draft.unlink()
        return cls(path.read_bytes())

    def token(self, purpose: Purpose, binding: str) -> str:
        # Domain separation: purpose and binding are joined by a byte neither can contain.
        message = f"deputy-csrf\x00{purpose}\x00{binding}".encode()
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def verify(self, purpose: Purpose, binding: str | None, presented: str) -> bool:
        if not binding or not presented:
            return False
        return hmac.compare_digest(self.token(purpose, binding).encode(), presented.encode("utf-8", "replace"))


def same_origin(origin_header: str | None, public_url: str) -> bool:
    """True when the request carries no ``Origin`` or Deputy's own; ``null`` and any other are foreign."""
    if origin_header is None:
        return True
    return serialized_origin(origin_header) == serialized_origin(public_url) != ""
