"""ID token validation: OpenID Connect Core 1.0 §3.1.3.7 (and §2, §15.5.2), RFC 8725 (JWT best practice).

An ID token from the token endpoint is believed only when all of this holds; each refusal is an
:class:`~deputy.federation.errors.IdTokenRefused` with its reason:

- it is a compact JWS of at most :data:`MAX_ID_TOKEN_BYTES`, header and payload JSON objects nested within the
  bound of :mod:`deputy.bounded_json`, no ``crit`` header (RFC 7515 §4.1.11), the payload not encrypted
  (``malformed``);
- ``alg`` is one the provider advertises (``id_token_signing_alg_values_supported``) and one Deputy verifies
  (:data:`~deputy.federation.provider_keys.ID_TOKEN_ALGORITHMS`): asymmetric only — never ``none`` (§3.1.3.7
  item 7 forbids it for the code flow's tokens too, as Deputy never asks for it), never an HMAC, which would
  otherwise be "verified" with the provider's public key as its secret, RFC 8725 §2.1 (``alg_not_allowed``);
- a key of the provider's JWK Set of the algorithm's type, and of the header's ``kid`` when it names one, verifies
  the signature (§3.1.3.7 item 6; ``unknown_kid``: no such key, even after one re-fetch; ``bad_signature``).
  Keys come only from the provider's ``jwks_uri``: ``jku``, ``x5u`` and ``jwk`` headers are never followed;
- ``iss`` is exactly the provider's issuer (item 2, ``wrong_issuer``);
- ``aud`` holds the client id; with several audiences or an ``azp`` at all, ``azp`` is the client id (items 3-5,
  ``wrong_audience``);
- ``exp`` is a time not past and ``iat`` one not in the future, each with ``clock_leeway`` (items 9-10;
  ``expired``, ``issued_in_future``); ``nbf``, when present, is not in the future either;
- ``nonce`` is present and equals the one the authorization request sent, compared in constant time (item 11,
  §15.5.2: it binds the token to this browser's sign-in, ``nonce_mismatch``);
- with ``max_age`` sent, ``auth_time`` is present and not older than it (item 13, ``authentication_too_old``);
- ``sub`` is a non-empty string of at most :data:`MAX_SUBJECT_LENGTH` characters (§2, ``malformed``).
"""

from __future__ import annotations

import hmac
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from joserfc import jws
from joserfc.errors import JoseError, SecurityWarning

from deputy import bounded_json, clock
from deputy.config_identity_providers import IdentityProvider
from deputy.federation.discovery import ProviderMetadata
from deputy.federation.errors import IdTokenProblem, IdTokenRefused, shown
from deputy.federation.provider_keys import ID_TOKEN_ALGORITHMS, ProviderKeys
from deputy.numeric_date import is_time

MAX_ID_TOKEN_BYTES = 16 * 1024
MAX_SUBJECT_LENGTH = 255  # OpenID Connect Core 1.0 §2: "MUST NOT exceed 255 ASCII characters"
MAX_KID_LENGTH = 256
Refuse = Callable[[IdTokenProblem, str], IdTokenRefused]


@dataclass(frozen=True, slots=True)
class IdTokenClaims:
    """A validated ID token's claims: the ones Deputy checked, typed, and all of them for mapping."""

    issuer: str
    subject: str
    expires_at: int
    issued_at: int
    auth_time: int | None
    claims: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Expected:
    """What the token must match: this sign-in's nonce, and the ``max_age`` it asked for (None: none)."""

    nonce: str
    max_age: int | None
    leeway: int


async def validate_id_token(token: Any, provider: IdentityProvider, metadata: ProviderMetadata,
                            keys: ProviderKeys, expected: Expected) -> IdTokenClaims:
    """The ID token's claims, when it passes every check of the module docstring; else :class:`IdTokenRefused`."""
    def refuse(reason: IdTokenProblem, detail: str) -> IdTokenRefused:
        return IdTokenRefused(provider.name, reason, detail)

    header = _header(token, refuse)
    algorithm = header.get("alg")
    if not isinstance(algorithm, str) or algorithm not in ID_TOKEN_ALGORITHMS or \
            algorithm not in metadata.id_token_signing_algs:
        raise refuse("alg_not_allowed", f"alg {shown(algorithm)!r} is not an asymmetric algorithm the provider "
                                        f"advertises")
    kid = header.get("kid")
    if kid is not None and (not isinstance(kid, str) or not kid or len(kid) > MAX_KID_LENGTH):
        raise refuse("malformed", "kid is not a short string")
    candidates = await keys.candidates(provider, metadata.jwks_uri, algorithm, kid)
    if not candidates:
        raise refuse("unknown_kid", f"no key of the provider's JWK Set for kid {shown(kid)!r} and {algorithm}")
    payload = _verified_payload(token, candidates, algorithm)
    if payload is None:
        raise refuse("bad_signature", "the signature is not by the provider's key")
    return _checked(payload, provider, expected, refuse)


def _header(token: Any, refuse: Refuse) -> dict[str, Any]:
    if not isinstance(token, str) or len(token) > MAX_ID_TOKEN_BYTES or token.count(".") != 2:
        raise refuse("malformed", "the ID token is not a compact JWS of a bounded size")
    try:
        bounded_json.check_jws_depth(token)
        header = jws.extract_compact(token.encode("ascii")).headers()
    except (JoseError, ValueError, UnicodeError):
        raise refuse("malformed", "the ID token is not a compact JWS") from None
    if not isinstance(header, dict):
        raise refuse("malformed", "the ID token's header is not a JSON object")
    if "crit" in header:
        raise refuse("malformed", "critical header parameters are not understood")
    return header


def _verified_payload(token: str, candidates: list[Any], algorithm: str) -> bytes | None:
    for key in candidates:
        try:
            with warnings.catch_warnings():
                # EdDSA (deprecated by RFC 9864) is accepted on purpose, as providers still send it; not noise to log.
                warnings.simplefilter("ignore", SecurityWarning)
                return jws.deserialize_compact(token, key, algorithms=[algorithm]).payload
        except (JoseError, ValueError, TypeError, KeyError):
            continue
    return None


def _checked(payload: bytes, provider: IdentityProvider, expected: Expected, refuse: Refuse) -> IdTokenClaims:
    try:
        claims = bounded_json.loads(payload)
    except (ValueError, UnicodeError):
        raise refuse("malformed", "the ID token's payload is not JSON") from None
    if not isinstance(claims, dict):
        raise refuse("malformed", "the ID token's payload is not a JSON object")
    if claims.get("iss") != provider.issuer:  # item 2: exact string comparison
        raise refuse("wrong_issuer", f"iss {shown(claims.get('iss'))!r} is not {provider.issuer!r}")
    _check_audience(claims, provider.client_id, refuse)
    now = clock.wall()
    exp, iat = claims.get("exp"), claims.get("iat")
    if not is_time(exp) or not is_time(iat):
        raise refuse("malformed", "exp and iat are required times")
    if exp + expected.leeway <= now:
        raise refuse("expired", "the ID token has expired")
    nbf = claims.get("nbf")
    if iat > now + expected.leeway or (nbf is not None and (not is_time(nbf) or nbf > now + expected.leeway)):
        raise refuse("issued_in_future", "iat or nbf is in the future")
    nonce = claims.get("nonce")
    # §15.5.2: the nonce this browser's sign-in sent, and nothing else; constant time (it is a secret until used).
    if not isinstance(nonce, str) or not hmac.compare_digest(nonce.encode(), expected.nonce.encode()):
        raise refuse("nonce_mismatch", "nonce is missing or not the one this sign-in sent")
    auth_time = claims.get("auth_time")
    if auth_time is not None and not is_time(auth_time):
        raise refuse("malformed", "auth_time is not a time")
    if expected.max_age is not None and (auth_time is None or auth_time + expected.max_age + expected.leeway < now):
        raise refuse("authentication_too_old", "auth_time is missing or older than the max_age asked for")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub or len(sub) > MAX_SUBJECT_LENGTH:
        raise refuse("malformed", f"sub must be a string of 1 to {MAX_SUBJECT_LENGTH} characters")
    return IdTokenClaims(provider.issuer, sub, int(exp), int(iat), None if auth_time is None else int(auth_time),
                         claims)


def _check_audience(claims: Mapping[str, Any], client_id: str, refuse: Refuse) -> None:
    """Items 3-5: ``aud`` contains the client id; several audiences, or an ``azp`` at all: ``azp`` is it."""
    audience = claims.get("aud")
    audiences = [audience] if isinstance(audience, str) else audience
    if not isinstance(audiences, list) or not audiences or not all(isinstance(a, str) for a in audiences):
        raise refuse("wrong_audience", "aud is missing or not a string or list of strings")
    if client_id not in audiences:
        raise refuse("wrong_audience", "aud does not include Deputy's client id")
    azp = claims.get("azp")
    if (len(audiences) > 1 or azp is not None) and azp != client_id:
        raise refuse("wrong_audience", "azp is not Deputy's client id (the token names several audiences)")
