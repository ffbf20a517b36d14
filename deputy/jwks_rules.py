"""What Deputy accepts as a signing key and a signature algorithm, wherever keys come from.

One home for the rules that both the configuration (``[[clients]]`` ``jwks``, ``[[trusted_issuers]]``
``jwks_file``) and the authorization server (client assertions, RFC 7523 §2.2 and §3; JWK Sets fetched from a
``jwks_uri``, RFC 7517 §5) apply, so that neither imports the other:

- the asymmetric algorithm allow-list (RFC 7518 §3, RFC 8037 §3.1, RFC 9864): never ``none`` or an HMAC, which a
  public key would otherwise "verify"; Ed25519 goes by its fully specified name, the deprecated ``EdDSA`` is
  accepted but never advertised;
- a JWK Set (RFC 7517 §5) holds public asymmetric keys only, RSA ones of at least :data:`MIN_RSA_BITS`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import JWKRegistry, RSAKey

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
