"""``private_key_jwt``: a client authenticates with a JWT it signed (RFC 7523 §2.2, §3; RFC 7521 §4.2).

The assertion is checked against the keys the client registered (``jwks``):

- ``client_assertion_type`` is exactly ``urn:ietf:params:oauth:client-assertion-type:jwt-bearer``;
- the algorithm is on an asymmetric allow-list (never ``none`` or an HMAC, which a
  public key would otherwise "verify"), and a key of the matching type signed it.
  Ed25519 signatures go by their fully specified name ``Ed25519`` (RFC 9864),
  which is what the metadata advertises; the polymorphic ``EdDSA``, deprecated by
  RFC 9864, is still accepted from clients that send it, with Ed25519 keys
  only, and a key registered for one name verifies the other (the same signature);
- ``iss`` and ``sub`` are both the ``client_id`` (§3 items 1-2);
- ``aud`` names this authorization server: its issuer or its token endpoint, as a
  string or in a list, compared as plain strings (§3 item 3);
- ``exp`` is required, in the future, and at most :data:`MAX_LIFETIME` away, so an
  assertion cannot be minted once and used for a year; ``iat``/``nbf``, when present,
  are not in the future (a small leeway for clock skew);
- ``jti`` is required and accepted once (§3 item 7): it is remembered in the database
  until the assertion expires, so a replay is refused on every replica.

Keys come from the client's registration: inline ``jwks``, or its ``jwks_uri``
fetched safely and cached (:mod:`deputy.oauth.client_keys`). The algorithm allow-list and
what a JWK Set may hold are :mod:`deputy.jwks_rules`, shared with the configuration.
"""

from __future__ import annotations

import warnings
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from joserfc import jws, jwt
from joserfc.errors import JoseError, SecurityWarning

from deputy import bounded_json
from deputy.jwks_rules import ADVERTISED_ALGORITHMS as ADVERTISED_ALGORITHMS
from deputy.jwks_rules import ALGORITHMS as ALGORITHMS
from deputy.jwks_rules import JwksError as JwksError
from deputy.jwks_rules import candidate_keys as candidate_keys
from deputy.jwks_rules import check_client_jwks as check_client_jwks
from deputy.numeric_date import is_time
from deputy.oauth.client_keys import ClientKeys
from deputy.oauth.errors import InvalidClient, InvalidRequest
from deputy.storage.clients import Client

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
MAX_LIFETIME = 300  # seconds an assertion may be valid for, counted from now
MAX_JTI_LENGTH = 255  # the width of the replay cache's column

RememberJti = Callable[[str, str, int], Awaitable[bool]]


class UnknownSigningKey(InvalidClient):
    """No registered key verifies the assertion (a key set fetched from a jwks_uri may be refreshed)."""


@dataclass(frozen=True, slots=True)
class AssertionContext:
    """What an assertion is checked against: this server's names and the clock."""

    issuer: str
    token_endpoint: str
    leeway: int
    now: int


def peek_client_id(assertion: str) -> str:
    """The ``sub`` of an unverified assertion: only to find whose keys to verify it with."""
    try:
        bounded_json.check_jws_depth(assertion)  # before the JOSE library parses the header with json.loads
        payload = bounded_json.loads(jws.extract_compact(assertion.encode("ascii")).payload)
    except (JoseError, ValueError, UnicodeError) as exc:
        raise InvalidClient(f"client_assertion is not a JWT ({type(exc).__name__})") from None
    sub = payload.get("sub") if isinstance(payload, dict) else None
    if not isinstance(sub, str) or not sub:
        raise InvalidClient("client_assertion has no sub (the client_id)")
    return sub


async def verify_client_assertion(
    assertion: str, client: Client, context: AssertionContext, remember_jti: RememberJti, keys: ClientKeys
) -> None:
    """Raise :class:`InvalidClient` unless ``assertion`` authenticates ``client``; consumes its ``jti``."""
    jwks, refreshable = await keys.keys(client)
    try:
        claims = _verified_claims(assertion, jwks)
    except UnknownSigningKey:
        if not refreshable:
            raise
        # The client may have rotated its keys since the set was cached.
        jwks, _ = await keys.keys(client, stale=True)
        claims = _verified_claims(assertion, jwks)
    client_id = client.client_id
    if claims.get("iss") != client_id or claims.get("sub") != client_id:
        raise InvalidClient("client_assertion iss and sub must both be the client_id")
    audience = claims.get("aud")
    audiences = audience if isinstance(audience, list) else [audience]
    if not ({context.issuer, context.token_endpoint} & {a for a in audiences if isinstance(a, str)}):
        raise InvalidClient("client_assertion aud must be this authorization server's issuer or token endpoint")
    exp, iat, nbf = claims.get("exp"), claims.get("iat"), claims.get("nbf")
    if not is_time(exp):
        raise InvalidClient("client_assertion exp is required")
    if exp + context.leeway <= context.now:
        raise InvalidClient("client_assertion has expired")
    if exp > context.now + MAX_LIFETIME + context.leeway:
        raise InvalidClient(f"client_assertion may be valid for at most {MAX_LIFETIME} seconds")
    for name, value in (("iat", iat), ("nbf", nbf)):
        if value is not None and (not is_time(value) or value > context.now + context.leeway):
            raise InvalidClient(f"client_assertion {name} is in the future or not a time")
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > MAX_JTI_LENGTH:
        raise InvalidClient("client_assertion jti is required (at most 255 characters)")
    if not await remember_jti(client_id, jti, int(exp) + context.leeway):
        raise InvalidClient("client_assertion was already used (jti replay)")


def _verified_claims(assertion: str, jwks: Mapping[str, Any]) -> dict[str, Any]:
    try:
        bounded_json.check_jws_depth(assertion)  # header and payload, before the JOSE library parses them
        header = jws.extract_compact(assertion.encode("ascii")).headers()
    except (JoseError, ValueError, UnicodeError):
        raise InvalidClient("client_assertion is not a compact JWS") from None
    algorithm = header.get("alg")
    if not isinstance(algorithm, str) or algorithm not in ALGORITHMS:
        raise InvalidClient(f"client_assertion alg must be one of {', '.join(ALGORITHMS)}")
    if "crit" in header:
        raise InvalidClient("client_assertion uses critical header parameters Deputy does not understand")
    kid = header.get("kid")
    for key in candidate_keys(jwks, algorithm, kid if isinstance(kid, str) else None):
        try:
            with warnings.catch_warnings():
                # Accepting the deprecated name is a choice made above; the library's warning would be noise.
                warnings.simplefilter("ignore", SecurityWarning)
                claims = jwt.decode(assertion, key, algorithms=[algorithm]).claims
        except (JoseError, ValueError, TypeError, KeyError):
            continue
        return dict(claims)
    raise UnknownSigningKey("client_assertion is not signed by a key the client registered")


def require_assertion_type(form: Mapping[str, str]) -> str:
    """The assertion from the form, when its type is the JWT bearer client assertion type (RFC 7523 §2.2)."""
    assertion, assertion_type = form.get("client_assertion"), form.get("client_assertion_type")
    if not assertion or not assertion_type:
        raise InvalidRequest("client_assertion and client_assertion_type go together")
    if assertion_type != ASSERTION_TYPE:
        raise InvalidClient(f"client_assertion_type must be {ASSERTION_TYPE}")
    return assertion
