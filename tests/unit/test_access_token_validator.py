"""AccessTokenValidator (RFC 9068 §4): claims, audience, time, revocation, algorithms, and the verification cache."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from joserfc import jwt
from joserfc.jwk import ECKey

from deputy.keys import KeyRing
from deputy.oauth.access_tokens import AccessTokenClaims, AccessTokenValidator, InvalidToken, mint_access_token

ISSUER = "https://deputy.example.com"
RESOURCE = "https://deputy.example.com/mcp/demo"
OTHER_RESOURCE = "https://deputy.example.com/mcp/other"
LEEWAY = 30
TTL = 300


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


class Revocations:
    def __init__(self) -> None:
        self.revoked: set[str] = set()
        self.calls: list[str] = []

    def __call__(self, grant_id: str) -> bool:
        self.calls.append(grant_id)
        return grant_id in self.revoked


@pytest.fixture(scope="module")
def ring(tmp_path_factory: pytest.TempPathFactory) -> KeyRing:
    return KeyRing.open(tmp_path_factory.mktemp("keys") / "keys", 3600)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def revocations() -> Revocations:
    return Revocations()


@pytest.fixture
def validator(ring: KeyRing, clock: Clock, revocations: Revocations) -> AccessTokenValidator:
    return AccessTokenValidator(ring, ISSUER, LEEWAY, revocations, clock=clock)


def mint(ring: KeyRing, **overrides: Any) -> tuple[str, dict[str, Any]]:
    args: dict[str, Any] = {
        "issuer": ISSUER, "subject": "user-1", "client_id": "client-1", "audience": RESOURCE,
        "scope": "demo:tools demo:admin", "ttl": TTL, "grant_id": "grant-1", "auth_time": 1_700_000_000,
    }
    args.update(overrides)
    return mint_access_token(ring, **args)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}.{b64(signature)}"


def sign_es256(ring: KeyRing, header: dict[str, Any], claims: dict[str, Any]) -> str:
    return jwt.encode(header, claims, ring.signing_key, algorithms=["ES256"])


def good_claims(ring: KeyRing) -> dict[str, Any]:
    return mint(ring)[1]


def good_header(ring: KeyRing) -> dict[str, Any]:
    return {"alg": "ES256", "typ": "at+jwt", "kid": ring.signing_key.kid}


# --- the happy path ---------------------------------------------------------------------------------


def test_valid_token(ring: KeyRing, validator: AccessTokenValidator, revocations: Revocations) -> None:
    token, claims = mint(ring)
    result = validator.validate(token, RESOURCE)
    assert isinstance(result, AccessTokenClaims)
    assert result.subject == "user-1"
    assert result.client_id == "client-1"
    assert result.audience == RESOURCE
    assert result.scopes == frozenset({"demo:tools", "demo:admin"})
    assert result.token_id == claims["jti"]
    assert result.grant_id == "grant-1"
    assert result.issued_at == claims["iat"]
    assert result.expires_at == claims["iat"] + TTL
    assert result.auth_time == 1_700_000_000
    assert result.raw["iss"] == ISSUER
    assert revocations.calls == ["grant-1"]


def test_token_without_grant_skips_revocation(ring: KeyRing, validator: AccessTokenValidator,
                                              revocations: Revocations) -> None:
    token, _ = mint(ring, grant_id=None, auth_time=None)
    result = validator.validate(token, RESOURCE)
    assert result.grant_id is None
    assert result.auth_time is None
    assert revocations.calls == []


def test_minted_header(ring: KeyRing) -> None:
    token, _ = mint(ring)
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header == {"alg": "ES256", "typ": "at+jwt", "kid": ring.signing_key.kid}


def test_audience_as_single_element_list(ring: KeyRing, validator: AccessTokenValidator) -> None:
    claims = good_claims(ring) | {"aud": [RESOURCE]}
    assert validator.validate(sign_es256(ring, good_header(ring), claims), RESOURCE).audience == RESOURCE


def test_application_at_jwt_typ(ring: KeyRing, validator: AccessTokenValidator) -> None:
    header = good_header(ring) | {"typ": "application/at+jwt"}
    assert validator.validate(sign_es256(ring, header, good_claims(ring)), RESOURCE).subject == "user-1"


# --- refusals ---------------------------------------------------------------------------------------


def test_wrong_audience(ring: KeyRing, validator: AccessTokenValidator) -> None:
    token, _ = mint(ring)
    with pytest.raises(InvalidToken) as info:
        validator.validate(token, OTHER_RESOURCE)
    assert info.value.reason == "issued for another resource"


def test_audience_is_compared_exactly(ring: KeyRing, validator: AccessTokenValidator) -> None:
    token, _ = mint(ring)
    for audience in (RESOURCE + "/", RESOURCE.upper(), ISSUER):
        with pytest.raises(InvalidToken):
            validator.validate(token, audience)


def test_expired_beyond_leeway(ring: KeyRing, validator: AccessTokenValidator, clock: Clock) -> None:
    token, claims = mint(ring)
    clock.now = claims["exp"] + LEEWAY + 1
    with pytest.raises(InvalidToken) as info:
        validator.validate(token, RESOURCE)
    assert info.value.reason == "expired"


def test_expired_exactly_at_leeway(ring: KeyRing, validator: AccessTokenValidator, clock: Clock) -> None:
    token, claims = mint(ring)
    clock.now = claims["exp"] + LEEWAY
    with pytest.raises(InvalidToken):
        validator.validate(token, RESOURCE)


def test_expired_within_leeway_accepted(ring: KeyRing, validator: AccessTokenValidator, clock: Clock) -> None:
    token, claims = mint(ring)
    clock.now = claims["exp"] + LEEWAY - 1
    assert validator.validate(token, RESOURCE).expires_at == claims["exp"]


def test_issued_in_the_future(ring: KeyRing, validator: AccessTokenValidator, clock: Clock) -> None:
    token, claims = mint(ring)
    clock.now = claims["iat"] - LEEWAY - 5
    with pytest.raises(InvalidToken) as info:
        validator.validate(token, RESOURCE)
    assert info.value.reason == "issued in the future"


def test_slightly_future_iat_within_leeway(ring: KeyRing, validator: AccessTokenValidator, clock: Clock) -> None:
    token, claims = mint(ring)
    clock.now = claims["iat"] - LEEWAY + 5
    assert validator.validate(token, RESOURCE).issued_at == claims["iat"]


def test_not_yet_valid(ring: KeyRing, validator: AccessTokenValidator, clock: Clock) -> None:
    claims = good_claims(ring)
    claims["nbf"] = int(clock.now) + 3600
    with pytest.raises(InvalidToken) as info:
        validator.validate(sign_es256(ring, good_header(ring), claims), RESOURCE)
    assert info.value.reason == "not yet valid"


def test_revoked_grant(ring: KeyRing, validator: AccessTokenValidator, revocations: Revocations) -> None:
    revocations.revoked.add("grant-1")
    token, _ = mint(ring)
    with pytest.raises(InvalidToken) as info:
        validator.validate(token, RESOURCE)
    assert info.value.reason == "revoked"


def test_wrong_issuer(ring: KeyRing, validator: AccessTokenValidator) -> None:
    token, _ = mint(ring, issuer=ISSUER + "/")
    with pytest.raises(InvalidToken) as info:
        validator.validate(token, RESOURCE)
    assert info.value.reason == "wrong issuer"


@pytest.mark.parametrize("typ", ["JWT", "jwt", "at+JWT+x", None])
def test_wrong_typ(ring: KeyRing, validator: AccessTokenValidator, typ: str | None) -> None:
    header = good_header(ring)
    if typ is None:
        del header["typ"]
    else:
        header["typ"] = typ
    with pytest.raises(InvalidToken) as info:
        validator.validate(sign_es256(ring, header, good_claims(ring)), RESOURCE)
    assert info.value.reason == "typ is not at+jwt"


@pytest.mark.parametrize(("name", "value"), [
    ("aud", [RESOURCE, OTHER_RESOURCE]), ("aud", None), ("aud", 7),
    ("exp", None), ("exp", "soon"), ("exp", True), ("iat", None),
    ("sub", None), ("sub", ""), ("client_id", None), ("jti", 5), ("scope", ["demo:tools"]),
])
def test_bad_claim(ring: KeyRing, validator: AccessTokenValidator, name: str, value: Any) -> None:
    claims = good_claims(ring)
    if value is None:
        del claims[name]
    else:
        claims[name] = value
    with pytest.raises(InvalidToken):
        validator.validate(sign_es256(ring, good_header(ring), claims), RESOURCE)


def test_alg_none(ring: KeyRing, validator: AccessTokenValidator) -> None:
    header = {"alg": "none", "typ": "at+jwt", "kid": ring.signing_key.kid}
    with pytest.raises(InvalidToken):
        validator.validate(unsigned(header, good_claims(ring)), RESOURCE)


def test_alg_none_with_empty_signature_segment(ring: KeyRing, validator: AccessTokenValidator) -> None:
    token = unsigned({"alg": "none", "typ": "at+jwt"}, good_claims(ring))
    assert token.endswith(".")
    with pytest.raises(InvalidToken):
        validator.validate(token, RESOURCE)


def test_hs256_signed_with_the_public_key(ring: KeyRing, validator: AccessTokenValidator) -> None:
    """Algorithm confusion: an HMAC keyed with the published public key must not verify."""
    header = {"alg": "HS256", "typ": "at+jwt", "kid": ring.signing_key.kid}
    public_jwk = next(k for k in ring.jwks()["keys"] if k["kid"] == ring.signing_key.kid)
    public_pem = ECKey.import_key(public_jwk).as_pem(private=False)
    for secret in (public_pem, json.dumps(public_jwk).encode()):
        signing_input = unsigned(header, good_claims(ring)).rsplit(".", 1)[0]
        signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        with pytest.raises(InvalidToken):
            validator.validate(f"{signing_input}.{b64(signature)}", RESOURCE)


def test_unknown_kid(ring: KeyRing, validator: AccessTokenValidator) -> None:
    stranger = ECKey.generate_key("P-256", parameters={"kid": "unknown-kid", "alg": "ES256"}, private=True)
    header = {"alg": "ES256", "typ": "at+jwt", "kid": "unknown-kid"}
    token = jwt.encode(header, good_claims(ring), stranger, algorithms=["ES256"])
    with pytest.raises(InvalidToken):
        validator.validate(token, RESOURCE)


def test_known_kid_but_foreign_key(ring: KeyRing, validator: AccessTokenValidator) -> None:
    kid = ring.signing_key.kid
    assert kid is not None
    stranger = ECKey.generate_key("P-256", parameters={"kid": kid, "alg": "ES256"}, private=True)
    token = jwt.encode(good_header(ring), good_claims(ring), stranger, algorithms=["ES256"])
    with pytest.raises(InvalidToken):
        validator.validate(token, RESOURCE)


def test_tampered_payload(ring: KeyRing, validator: AccessTokenValidator) -> None:
    token, claims = mint(ring)
    header, _, signature = token.split(".")
    forged = b64(json.dumps(claims | {"sub": "admin"}).encode())
    with pytest.raises(InvalidToken):
        validator.validate(f"{header}.{forged}.{signature}", RESOURCE)


@pytest.mark.parametrize("garbage", [
    "", "garbage", "a.b", "a.b.c", "...", "a.b.c.d.e", "eyJ.eyJ.eyJ", "\u00e9.\u00e9.\u00e9",
    b64(b"not json") + "." + b64(b"{}") + ".",
    b64(b"[1,2]") + "." + b64(b"{}") + "." + b64(b"sig"),
    b64(b'{"alg":"ES256","typ":"at+jwt"}') + "." + b64(b"[]") + "." + b64(b"x" * 64),
    b64(b'{"alg":"ES256","typ":"at+jwt"}') + "." + b64(b"null") + "." + b64(b"x" * 64),
])
def test_garbage(validator: AccessTokenValidator, garbage: str) -> None:
    with pytest.raises(InvalidToken):
        validator.validate(garbage, RESOURCE)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=200))
def test_any_text_is_refused_with_invalid_token(ring: KeyRing, text: str) -> None:
    validator = AccessTokenValidator(ring, ISSUER, LEEWAY, lambda _grant: False)
    with pytest.raises(InvalidToken):
        validator.validate(text, RESOURCE)


# --- the verification cache -------------------------------------------------------------------------


def count_verifications(validator: AccessTokenValidator, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    verify = validator._verify

    def counting(token: str) -> AccessTokenClaims:
        calls.append(token)
        return verify(token)

    monkeypatch.setattr(validator, "_verify", counting)
    return calls


def test_signature_checked_once(ring: KeyRing, validator: AccessTokenValidator,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    calls = count_verifications(validator, monkeypatch)
    token, _ = mint(ring)
    first = validator.validate(token, RESOURCE)
    second = validator.validate(token, RESOURCE)
    assert second == first
    assert calls == [token]
    other, _ = mint(ring)
    validator.validate(other, RESOURCE)
    assert calls == [token, other]


def test_cached_token_still_checked_for_audience(ring: KeyRing, validator: AccessTokenValidator,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    calls = count_verifications(validator, monkeypatch)
    token, _ = mint(ring)
    validator.validate(token, RESOURCE)
    with pytest.raises(InvalidToken):
        validator.validate(token, OTHER_RESOURCE)
    assert len(calls) == 1


def test_cached_token_rechecked_for_expiry(ring: KeyRing, validator: AccessTokenValidator, clock: Clock,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    calls = count_verifications(validator, monkeypatch)
    token, claims = mint(ring)
    validator.validate(token, RESOURCE)
    clock.now = claims["exp"] + LEEWAY + 1
    with pytest.raises(InvalidToken) as info:
        validator.validate(token, RESOURCE)
    assert info.value.reason == "expired"
    assert len(calls) == 1
    with pytest.raises(InvalidToken):
        validator.validate(token, RESOURCE)


def test_cached_token_rechecked_for_revocation(ring: KeyRing, validator: AccessTokenValidator,
                                               revocations: Revocations, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = count_verifications(validator, monkeypatch)
    token, _ = mint(ring)
    validator.validate(token, RESOURCE)
    revocations.revoked.add("grant-1")
    with pytest.raises(InvalidToken) as info:
        validator.validate(token, RESOURCE)
    assert info.value.reason == "revoked"
    assert len(calls) == 1
    assert revocations.calls == ["grant-1", "grant-1"]


def test_revocation_check_failure_propagates(ring: KeyRing, clock: Clock) -> None:
    class Unavailable(RuntimeError):
        pass

    def is_revoked(_grant: str) -> bool:
        raise Unavailable

    validator = AccessTokenValidator(ring, ISSUER, LEEWAY, is_revoked, clock=clock)
    token, _ = mint(ring)
    with pytest.raises(Unavailable):
        validator.validate(token, RESOURCE)


def test_invalid_token_is_not_cached(ring: KeyRing, validator: AccessTokenValidator,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    calls = count_verifications(validator, monkeypatch)
    token, _ = mint(ring, issuer="https://evil.example.com")
    for _ in range(2):
        with pytest.raises(InvalidToken):
            validator.validate(token, RESOURCE)
    assert len(calls) == 2


def test_validator_for_another_issuer_refuses(ring: KeyRing) -> None:
    token, _ = mint(ring)
    other = AccessTokenValidator(ring, "https://other.example.com", LEEWAY, lambda _grant: False)
    with pytest.raises(InvalidToken):
        other.validate(token, RESOURCE)
