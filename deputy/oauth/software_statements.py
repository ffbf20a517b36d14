"""Software statements: client metadata vouched for by a publisher Deputy trusts (RFC 7591 §2.3).

A software statement is a JWT (RFC 7519) whose claims are client metadata. Deputy
accepts one only when its ``iss`` is a configured trusted publisher and its signature
verifies with that publisher's JWK Set (asymmetric algorithms only); ``exp``, ``nbf``
and ``iat`` are checked with the configured clock leeway. Its claims then take
precedence over the same fields sent in the clear (RFC 7591 §3.1.1). The publisher
vouches for the claims it signed and nothing else: a field only the request carries is
the requester's word (what that means for admission: :mod:`deputy.oauth.admission`).

An issuer nobody configured → ``unapproved_software_statement``; a statement that is
malformed, badly signed or out of its validity window → ``invalid_software_statement``
(RFC 7591 §3.2.2).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.util import urlsafe_b64decode

from deputy import bounded_json
from deputy.client_trust import TrustedPublisher
from deputy.clock import now, wall
from deputy.oauth.errors import InvalidSoftwareStatement, UnapprovedSoftwareStatement

ALGORITHMS = ("ES256", "ES384", "ES512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "EdDSA")
# JWT claims about the statement itself, not client metadata (and no statement inside a statement).
_STATEMENT_CLAIMS = frozenset({"iss", "sub", "aud", "exp", "nbf", "iat", "jti", "software_statement"})
MAX_LENGTH = 8 * 1024


@dataclass(frozen=True, slots=True)
class SoftwareStatement:
    """A statement that verified: who signed it, and the client metadata it signed."""

    publisher: str  # the trusted publisher's issuer
    claims: Mapping[str, Any]  # metadata claims only; the JWT's own (iss, exp...) are left out

    def vouches_for(self, field: str) -> bool:
        """Whether the publisher signed ``field`` itself (a field the request alone carries is not vouched for)."""
        return field in self.claims


def verify_software_statement(statement: Any, publishers: Sequence[TrustedPublisher],
                              leeway: int) -> SoftwareStatement:
    """The publisher and the metadata claims of a statement that verifies."""
    if not isinstance(statement, str) or not statement or len(statement) > MAX_LENGTH:
        raise InvalidSoftwareStatement("software_statement must be a compact JWT")
    issuer = _unverified_issuer(statement)
    publisher = next((p for p in publishers if p.issuer == issuer), None)
    if publisher is None:
        raise UnapprovedSoftwareStatement("the software statement's issuer is not a trusted publisher")
    try:
        keys = KeySet.import_key_set(dict(publisher.jwks))  # type: ignore[arg-type]
        token = jwt.decode(statement, keys, algorithms=ALGORITHMS)
        registry = jwt.JWTClaimsRegistry(now=now(), leeway=leeway,
                                         iss={"essential": True, "value": publisher.issuer})
        registry.validate(token.claims)
    except (JoseError, ValueError, TypeError):
        raise InvalidSoftwareStatement("the software statement does not verify (signature, issuer or time)") from None
    iat = token.claims.get("iat")
    if iat is not None and (not isinstance(iat, int) or iat > wall() + leeway):
        raise InvalidSoftwareStatement("the software statement is issued in the future")
    return SoftwareStatement(publisher.issuer, {k: v for k, v in token.claims.items() if k not in _STATEMENT_CLAIMS})


def _unverified_issuer(statement: str) -> str:
    """Which publisher's keys to try; nothing read here is trusted until the signature verifies."""
    parts = statement.split(".")
    if len(parts) != 3:
        raise InvalidSoftwareStatement("software_statement must be a compact JWS")
    try:
        bounded_json.check_jws_depth(statement)  # the header too: the JOSE library parses it with json.loads
        claims = bounded_json.loads(urlsafe_b64decode(parts[1].encode()))
    except (ValueError, TypeError):
        raise InvalidSoftwareStatement("software_statement is not a readable JWT") from None
    issuer = claims.get("iss") if isinstance(claims, dict) else None
    if not isinstance(issuer, str) or not issuer:
        raise InvalidSoftwareStatement("software_statement has no iss")
    return issuer
