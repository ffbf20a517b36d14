"""Which keys may verify which assertion algorithm (RFC 7523 §3; RFC 9864 fully specified Ed25519)."""

from __future__ import annotations

import time
import warnings
from typing import Any

import pytest
from joserfc import jwt
from joserfc.errors import SecurityWarning
from joserfc.jwk import ECKey, OKPKey

from deputy.oauth.client_assertions import ADVERTISED_ALGORITHMS, ALGORITHMS, _verified_claims, candidate_keys

ED25519 = OKPKey.generate_key("Ed25519", parameters={"kid": "ed"}, private=True)
ED448 = OKPKey.generate_key("Ed448", parameters={"kid": "ed448"}, private=True)
P256 = ECKey.generate_key("P-256", parameters={"kid": "ec"}, private=True)


def jwks(*keys: Any, alg: str | None = None) -> dict[str, Any]:
    return {"keys": [{**key.as_dict(private=False), **({"alg": alg} if alg else {})} for key in keys]}


def signed(alg: str, key: Any = ED25519) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SecurityWarning)  # signing with the deprecated EdDSA name, on purpose
        return jwt.encode({"alg": alg, "kid": key.kid}, {"sub": "agent", "exp": int(time.time()) + 60}, key,
                          algorithms=[alg])


def test_ed25519_is_advertised_and_the_deprecated_eddsa_is_not() -> None:
    assert "Ed25519" in ADVERTISED_ALGORITHMS
    assert "EdDSA" in ALGORITHMS and "EdDSA" not in ADVERTISED_ALGORITHMS
    assert not [alg for alg in ALGORITHMS if alg == "none" or alg.startswith("HS")]


@pytest.mark.parametrize("registered_alg", [None, "Ed25519", "EdDSA"])
@pytest.mark.parametrize("assertion_alg", ["Ed25519", "EdDSA"])
def test_an_ed25519_key_verifies_either_name_whatever_alg_it_was_registered_with(
        registered_alg: str | None, assertion_alg: str) -> None:
    """"EdDSA" with an Ed25519 key and "Ed25519" are one signature algorithm (RFC 9864)."""
    keys = jwks(ED25519, alg=registered_alg)
    assert [key.kid for key in candidate_keys(keys, assertion_alg, None)] == ["ed"]
    assert _verified_claims(signed(assertion_alg), keys)["sub"] == "agent"


@pytest.mark.parametrize("assertion_alg", ["Ed25519", "EdDSA"])
def test_ed448_and_other_key_types_are_never_candidates(assertion_alg: str) -> None:
    assert candidate_keys(jwks(ED448, P256), assertion_alg, None) == []
    assert candidate_keys(jwks(ED25519, alg="ES256"), assertion_alg, None) == []


def test_verifying_a_deprecated_eddsa_assertion_does_not_warn() -> None:
    token = signed("EdDSA")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _verified_claims(token, jwks(ED25519))["sub"] == "agent"
