"""Decoding an access token (RFC 9068) and checking it as this Deputy would, for ``deputy token inspect``.

The header and payload are read with a bound on their nesting (:mod:`deputy.bounded_json`); the signature is
checked against the key ring in the data directory, read only (nothing is created or rotated); then ``typ``
(RFC 9068 §4), issuer, times, the required claims, ``aud`` and the ``act`` chain (RFC 8693 §4.1). The
database is not read, so a revoked grant is not seen here. Explaining the result is :mod:`deputy.cli.tokens`.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deputy import bounded_json
from deputy.act_chain import MalformedChain, parse_act
from deputy.numeric_date import is_time

if TYPE_CHECKING:
    from joserfc.jwk import ECKey

    from deputy.config import Settings

EXIT_OK = 0
EXIT_UNREADABLE = 1  # not a JWT, or the configuration or key ring could not be read
EXIT_INVALID = 2  # decoded, but not a token this Deputy accepts

REQUIRED_CLAIMS = ("sub", "client_id", "jti")


class Malformed(ValueError):
    """Not a compact JWS whose header and payload are JSON objects."""


@dataclass(frozen=True, slots=True)
class Decoded:
    header: dict[str, Any]
    claims: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RingKey:
    kid: str
    key: ECKey
    status: str  # "active", "retired" (still published) or "withdrawn" (no longer published)


@dataclass(slots=True)
class Verification:
    signature: str  # "valid", "invalid", "unknown_key" or "not_checked"
    detail: str
    key_status: str | None = None
    issuer_ok: bool | None = None
    expired: bool | None = None
    expires_in: int | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.problems

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.valid else EXIT_INVALID

    def as_dict(self) -> dict[str, Any]:
        return {"signature": self.signature, "detail": self.detail, "key_status": self.key_status,
                "issuer_ok": self.issuer_ok, "expired": self.expired, "expires_in": self.expires_in,
                "problems": self.problems, "valid": self.valid, "exit_code": self.exit_code}


# --- decoding and checking --------------------------------------------------------------------------

def decode(token: str) -> Decoded:
    parts = token.split(".")
    if len(parts) != 3:
        raise Malformed(f"a JWT has 3 dot-separated parts, this has {len(parts)}"
                        + (" (5 parts: an encrypted JWE, not a Deputy access token)" if len(parts) == 5 else ""))
    return Decoded(_json_part(parts[0], "header"), _json_part(parts[1], "payload"))


def _json_part(part: str, what: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        value = bounded_json.loads(raw)  # TooDeep is a ValueError: refused as not JSON
    except (binascii.Error, ValueError):
        raise Malformed(f"the {what} is not base64url-encoded JSON") from None
    if not isinstance(value, dict):
        raise Malformed(f"the {what} is not a JSON object")
    return value


def read_ring(directory: Path, max_token_lifetime: int, now: float) -> list[RingKey] | None:
    """Every key in the ring, with whether Deputy still publishes it; None when there is no ring."""
    from joserfc.jwk import ECKey

    from deputy.keys import ALGORITHM, KeyRing

    ring = KeyRing(directory, max_token_lifetime)  # the constructor reads nothing; open() would create a key
    if not (directory / "keys.json").exists():
        return None
    found = []
    for entry in ring.entries():
        key = ECKey.import_key((directory / f"{entry.kid}.pem").read_bytes(),
                               parameters={"kid": entry.kid, "alg": ALGORITHM})
        if entry.retired_at is None:
            status = "active"
        elif entry.retired_at + max_token_lifetime >= now:
            status = "retired"
        else:
            status = "withdrawn"
        found.append(RingKey(entry.kid, key, status))
    return found


def check_signature(token: str, header: Mapping[str, Any], keys: Sequence[RingKey],
                    where: Path) -> tuple[str, str, str | None]:
    """(signature status, what it means, status of the key that signed)."""
    from joserfc import jws
    from joserfc.errors import JoseError

    from deputy.keys import ALGORITHM

    alg = header.get("alg")
    if alg != ALGORITHM:
        return "invalid", f"alg {claim_text(alg)}: Deputy signs and accepts only {ALGORITHM}", None
    kid = header.get("kid")
    candidates = [k for k in keys if k.kid == kid] if isinstance(kid, str) else list(keys)
    if not candidates:
        named = f"kid {claim_text(kid)} is" if kid is not None else "no kid, and no key"
        return "unknown_key", f"{named} not one of this Deputy's keys ({where}): signed by someone else", None
    for candidate in candidates:
        try:
            jws.deserialize_compact(token, candidate.key, algorithms=[ALGORITHM])
        except (JoseError, ValueError, TypeError):
            continue
        if candidate.status == "withdrawn":
            return ("invalid", f"signed by key {candidate.kid}, retired long enough ago that Deputy no longer "
                    "publishes or accepts it", candidate.status)
        return "valid", f"verified with key {candidate.kid} ({candidate.status})", candidate.status
    named = f"key {candidates[0].kid}" if len(candidates) == 1 else "any key of this Deputy"
    return "invalid", f"does not verify with {named}: altered after signing, or forged", None


def verify(token: str, decoded: Decoded, settings: Settings | None, now: float) -> Verification:
    from deputy.oauth.access_tokens import TOKEN_TYPES

    if settings is None:
        result = Verification("not_checked", "no configuration (--config or DEPUTY_CONFIG): decoded only")
    else:
        keys_dir = settings.data_dir / "keys"
        keys = read_ring(keys_dir, settings.access_token_ttl, now)
        if keys is None:
            result = Verification("not_checked", f"no key ring at {keys_dir}")
        else:
            status, detail, key_status = check_signature(token, decoded.header, keys, keys_dir)
            result = Verification(status, detail, key_status)
            if status != "valid":
                result.problems.append(f"signature: {detail}")
    claims = decoded.claims
    typ = decoded.header.get("typ")
    if not isinstance(typ, str) or typ.lower() not in TOKEN_TYPES:
        result.problems.append(f"typ is {claim_text(typ)}, not at+jwt: not an access token (RFC 9068 §4)")
    if settings is not None:
        result.issuer_ok = claims.get("iss") == settings.issuer
        if not result.issuer_ok:
            result.problems.append(f"issuer {claim_text(claims.get('iss'))} is not this Deputy ({settings.issuer})")
    exp, iat, nbf = claims.get("exp"), claims.get("iat"), claims.get("nbf")
    if is_time(exp):
        result.expires_in = int(exp - now)
        result.expired = exp <= now
        if result.expired:
            result.problems.append(f"expired {relative(exp, now)}")
    else:
        result.problems.append("exp is missing or not a number")
    if not is_time(iat):
        result.problems.append("iat is missing or not a number")
    elif iat > now + 60:
        result.problems.append(f"issued in the future ({relative(iat, now)})")
    if nbf is not None and (not is_time(nbf) or nbf > now):
        result.problems.append("not valid yet (nbf)")
    for name in REQUIRED_CLAIMS:
        if not isinstance(claims.get(name), str) or not claims[name]:
            result.problems.append(f"{name} is missing")
    aud = claims.get("aud")
    if not (isinstance(aud, str) or (isinstance(aud, list) and len(aud) == 1 and isinstance(aud[0], str))):
        result.problems.append("aud must name exactly one resource")
    if not isinstance(claims.get("scope", ""), str):
        result.problems.append("scope is not a string")
    try:
        parse_act(claims.get("act"))
    except MalformedChain as exc:
        result.problems.append(f"act: {exc}")
    txn = claims.get("txn")
    if txn is not None and (not isinstance(txn, str) or not txn):
        result.problems.append("txn is not a string")
    return result


# --- wording shared with the explanation ------------------------------------------------------------

def relative(value: float, now: float) -> str:
    delta = int(value - now)
    words = span(abs(delta))
    return "now" if delta == 0 else f"in {words}" if delta > 0 else f"{words} ago"


def span(seconds: int) -> str:
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400:
        hours, minutes = divmod(seconds // 60, 60)
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{seconds // 86400} d"


def claim_text(value: Any) -> str:
    """A claim as one line of text: strings as they are, anything else as JSON; control characters escaped."""
    text = value if isinstance(value, str) else json.dumps(value)
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)
