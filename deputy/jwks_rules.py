"""What Deputy accepts as a signing key and a signature algorithm, wherever keys come from.

One home for the rules that both the configuration (``[[clients]]`` ``jwks``, ``[[trusted_issuers]]``
``jwks_file``) and the authorization server (client assertions, RFC 7523 §2.2 and §3; JWK Sets fetched from a
``jwks_uri``, RFC 7517 §5) apply, so that neither imports the other:

- the asymmetric algorithm allow-list (RFC 7518 §3, RFC 8037 §3.1, RFC 9864): never ``none`` or an HMAC, which a
  public key would otherwise "verify"; Ed25519 goes by its fully specified name, the deprecated ``EdDSA`` is
  accepted but never advertised;
- a JWK Set (RFC 7517 §5) holds public asymmetric keys only, RSA ones of at least :data:`MIN_RSA_BITS`;
- which keys of a set may have made a signature (:func:`candidate_keys`), for client assertions, trusted issuers'
  tokens and identity providers' ID tokens alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import ECKey, JWKRegistry, OKPKey, RSAKey

MIN_RSA_BITS = 2048
# Algorithm → (key type, curve); a key of another type never verifies (no algorithm confusion).
ALGORITHMS: Mapping[str, tuple[str, str | None]] = {
    "ES256": ("EC", "P-256"),
    "RS256": ("RSA", None),
    "PS256": ("RSA", None),
    "Ed25519": ("OKP", "Ed25519"),  # the fully specified name (RFC 9864)
    "EdDSA": ("OKP", "Ed25519"),  # deprecated by RFC 9864: accepted, never advertised, never Ed448
}
DEPRECATED_ALGORITHMS = frozenset({"EdDSA"})
# What the metadata advertises (RFC 8414 §2 token_endpoint_auth_signing_alg_values_supported).
ADVERTISED_ALGORITHMS = tuple(alg for alg in ALGORITHMS if alg not in DEPRECATED_ALGORITHMS)
# Names of one signature algorithm: a key registered with ``"alg": "EdDSA"`` verifies ``Ed25519`` and back.
SAME_SIGNATURE = {"EdDSA": "Ed25519"}
VerifyingKey = ECKey | RSAKey | OKPKey


class JwksError(ValueError):
    """A JWK Set is unusable. ``index`` is the offending key's position in ``keys`` (None: the set itself), and
    ``problem`` says what is wrong with it; the message joins both."""

    def __init__(self, problem: str, index: int | None = None) -> None:
        super().__init__(problem if index is None else f"key {index}: {problem}")
        self.problem = problem
        self.index = index


def check_client_jwks(value: Any) -> dict[str, Any]:
    """Validate a JWK Set: public asymmetric signing keys only; returns it unchanged."""
    if not isinstance(value, dict) or not isinstance(value.get("keys"), list) or not value["keys"]:
        raise JwksError('must be a JWK Set: {"keys": [...]} with at least one key')
    for index, data in enumerate(value["keys"]):
        if not isinstance(data, dict):
            raise JwksError("is not a JSON object", index)
        if data.get("kty") not in ("EC", "RSA", "OKP"):
            raise JwksError("kty must be EC, RSA or OKP (no symmetric keys)", index)
        if "d" in data or "p" in data:
            raise JwksError("contains private key material; register only the public key", index)
        try:
            key = JWKRegistry.import_key(data)
        except (JoseError, ValueError, TypeError, KeyError) as exc:
            raise JwksError(f"is not a valid JWK ({type(exc).__name__})", index) from None
        if isinstance(key, RSAKey) and key.raw_value.key_size < MIN_RSA_BITS:
            raise JwksError(f"RSA keys must have at least {MIN_RSA_BITS} bits", index)
    return value


def candidate_keys(jwks: Mapping[str, Any], algorithm: str, kid: str | None,
                   algorithms: Mapping[str, tuple[str, str | None]] = ALGORITHMS) -> list[VerifyingKey]:
    """The public keys of ``jwks`` that may have made a signature with ``algorithm`` (one of ``algorithms``; and
    ``kid``, when given): the key type and curve the algorithm needs, ``use`` absent or ``sig``, ``alg`` absent or
    the same signature, RSA of at least :data:`MIN_RSA_BITS`."""
    if algorithm not in algorithms:
        return []
    key_type, curve = algorithms[algorithm]
    found: list[VerifyingKey] = []
    for data in jwks.get("keys", []):
        if not isinstance(data, dict) or data.get("kty") != key_type or "d" in data:
            continue
        if kid is not None and data.get("kid") != kid:
            continue
        if data.get("use", "sig") != "sig" or _signature(data.get("alg", algorithm)) != _signature(algorithm):
            continue
        if curve is not None and data.get("crv") != curve:
            continue
        try:
            # "alg" was matched above, by signature; left in, the library would compare the names again.
            key = JWKRegistry.import_key({name: value for name, value in data.items() if name != "alg"})
        except (JoseError, ValueError, TypeError, KeyError):
            continue
        if isinstance(key, RSAKey) and key.raw_value.key_size < MIN_RSA_BITS:
            continue
        if isinstance(key, ECKey | RSAKey | OKPKey):
            found.append(key)
    return found


def _signature(algorithm: object) -> object:
    return SAME_SIGNATURE.get(algorithm, algorithm) if isinstance(algorithm, str) else algorithm
