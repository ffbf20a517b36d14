"""Argon2id hashes of user passwords and client secrets (RFC 9106 parameters from argon2-cffi).

An argon2 verification costs tens of milliseconds of CPU by design, so it runs in a
worker thread: one sign-in or client authentication must not stall every call the
gateway is relaying on the event loop. A client secret that verified recently is
remembered for :data:`REMEMBER_SECONDS`, so an agent authenticating on every token
request (client credentials, token exchange) pays the argon2 cost once, not per
request. The memory holds an HMAC of (stored hash, secret) under a per-process random
key — never the secret — and the stored hash is part of it, so a rotated secret is
never matched by the old entry. Passwords are not remembered: sign-ins are rare, and
their cost is what throttles guessing.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections import OrderedDict

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

REMEMBER_SECONDS = 300.0
REMEMBERED_MAX = 10_000

_hasher = PasswordHasher()
_memory_key = secrets.token_bytes(32)
_remembered: OrderedDict[bytes, float] = OrderedDict()


def hash_secret(secret: str) -> str:
    return _hasher.hash(secret)


def _matches(stored: str, presented: str) -> bool:
    try:
        return _hasher.verify(stored, presented)
    except (VerificationError, InvalidHashError):
        return False


async def verify_password(stored: str, presented: str) -> bool:
    return await asyncio.to_thread(_matches, stored, presented)


async def verify_client_secret(stored: str, presented: str) -> bool:
    key = hmac.new(_memory_key, f"{stored}\x00{presented}".encode(), hashlib.sha256).digest()
    now = time.monotonic()
    seen = _remembered.get(key)
    if seen is not None and now - seen < REMEMBER_SECONDS:
        return True
    if not await asyncio.to_thread(_matches, stored, presented):
        return False
    _remembered[key] = now
    _remembered.move_to_end(key)
    while len(_remembered) > REMEMBERED_MAX:
        _remembered.popitem(last=False)
    return True
