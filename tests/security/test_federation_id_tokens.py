"""Issue 14, items 2 and 5: every ID token a hostile provider can hand back is refused, with its reason.

The provider is :mod:`tests.support.hostile_idp`, a real HTTP server whose token endpoint returns whatever ID token
the test signed; the relying party (:mod:`deputy.federation`) fetches its discovery document, its JWK Set and the
token over real connections. OpenID Connect Core 1.0 §3.1.3.7 is the list; RFC 8725 §2.1 the algorithm attacks.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from joserfc.jwk import ECKey

from deputy import clock
from deputy.federation.errors import IdTokenRefused
from deputy.federation.provider_keys import REFETCH_INTERVAL
from deputy.federation.relying_party import RelyingParty
from tests.support.hostile_idp import CLIENT_ID, LEEWAY, HostileIdp, hostile_idp, provider_for, sign_in
from tests.support.idp import OMIT, sign, unknown_key


@pytest.fixture
async def idp() -> AsyncIterator[HostileIdp]:
    async with hostile_idp() as served:
        yield served


async def refused(idp: HostileIdp, token: Callable[[str], Any], *, rp: RelyingParty | None = None,
                  **entry: Any) -> str:
    """The reason the sign-in with ``token(nonce)`` is refused for (the test fails if it is not)."""
    provider = provider_for(idp, **entry)
    rp = rp or RelyingParty((provider,), LEEWAY)
    with pytest.raises(IdTokenRefused) as info:
        await sign_in(rp, idp, provider, token)
    assert info.value.idp == idp.name
    return info.value.reason


@dataclass(frozen=True)
class FromNow:
    """A time claim ``seconds`` from when the token is made: parameters are made when the tests are collected,
    which may be many minutes before one runs."""

    seconds: int


def valid(idp: HostileIdp, nonce: str, /, **changes: Any) -> dict[str, Any]:
    """A valid ID token's claims for this sign-in's nonce, ``changes`` applied (a ``nonce`` among them too)."""
    changes = {name: int(time.time()) + value.seconds if isinstance(value, FromNow) else value
               for name, value in changes.items()}
    return idp.claims(client_id=CLIENT_ID, **{"nonce": nonce, **changes})


def by_stranger(idp: HostileIdp, kid: str) -> Callable[[str], str]:
    """A valid ID token signed by a key the provider never published, under ``kid``."""
    return lambda nonce: idp.sign(valid(idp, nonce), key=unknown_key(kid))


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# --- signatures and algorithms -----------------------------------------------------------------------------------

async def test_a_signature_by_another_key_under_the_providers_kid_is_refused(idp: HostileIdp) -> None:
    forger = ECKey.generate_key("P-256", private=True)
    assert await refused(idp, lambda n: idp.sign(valid(idp, n), key=forger, kid=idp.keys.ec_key.kid)) == \
        "bad_signature"


async def test_a_payload_changed_after_signing_is_refused(idp: HostileIdp) -> None:
    def tampered(nonce: str) -> str:
        header, _payload, signature = idp.sign(valid(idp, nonce, sub="bob")).split(".")
        return ".".join([header, b64(json.dumps(valid(idp, nonce, sub="alice-admin")).encode()), signature])
    assert await refused(idp, tampered) == "bad_signature"


async def test_alg_none_is_refused(idp: HostileIdp) -> None:
    assert await refused(idp, lambda n: sign({"alg": "none", "kid": idp.keys.ec_key.kid}, valid(idp, n))) == \
        "alg_not_allowed"


async def test_alg_none_is_refused_even_when_the_provider_advertises_it(idp: HostileIdp) -> None:
    idp.metadata_changes["id_token_signing_alg_values_supported"] = ["none", "ES256"]
    assert await refused(idp, lambda n: sign({"alg": "none"}, valid(idp, n))) == "alg_not_allowed"


@pytest.mark.parametrize("secret", ["pem", "jwk"])
async def test_hs256_keyed_with_the_providers_public_key_is_refused(idp: HostileIdp, secret: str) -> None:
    """RFC 8725 §2.1: a verifier that took the "alg" from the token would check this HMAC with the public key."""
    idp.metadata_changes["id_token_signing_alg_values_supported"] = ["HS256", "RS256", "ES256"]
    public = idp.keys.rsa_key
    key = public.as_pem(private=False) if secret == "pem" else json.dumps(public.as_dict(private=False)).encode()
    assert await refused(idp, lambda n: sign({"alg": "HS256", "kid": public.kid}, valid(idp, n), key)) == \
        "alg_not_allowed"


async def test_an_algorithm_deputy_allows_but_the_provider_does_not_advertise_is_refused(idp: HostileIdp) -> None:
    assert await refused(idp, lambda n: idp.sign(valid(idp, n), alg="PS256")) == "alg_not_allowed"


async def test_an_ec_algorithm_naming_an_rsa_keys_kid_finds_no_key(idp: HostileIdp) -> None:
    """Key type follows the algorithm: an RSA key never checks an ES256 signature."""
    forger = ECKey.generate_key("P-256", private=True)
    assert await refused(idp, lambda n: idp.sign(valid(idp, n), key=forger, kid=idp.keys.rsa_key.kid)) == \
        "unknown_kid"


async def test_a_jku_header_is_never_followed(idp: HostileIdp) -> None:
    async with hostile_idp("attacker") as attacker:
        forger = attacker.keys.ec_key
        header = {"jku": attacker.url("/jwks"), "jwk": forger.as_dict(private=False)}
        assert await refused(idp, lambda n: idp.sign(valid(idp, n), key=forger, kid=forger.kid,
                                                     header=header)) == "unknown_kid"
        assert attacker.hits["jwks"] == 0


# --- unknown kid: one re-fetch, rate-limited ---------------------------------------------------------------------

async def test_an_unknown_kid_fetches_the_keys_again_once_and_is_refused(idp: HostileIdp) -> None:
    provider = provider_for(idp)
    rp = RelyingParty((provider,), LEEWAY)
    await sign_in(rp, idp, provider)  # the set is held now
    assert idp.hits["jwks"] == 1
    stranger = unknown_key("stranger-1")
    assert await refused(idp, lambda n: idp.sign(valid(idp, n), key=stranger), rp=rp) == "unknown_kid"
    assert idp.hits["jwks"] == 2  # one re-fetch
    other = unknown_key("stranger-2")
    assert await refused(idp, lambda n: idp.sign(valid(idp, n), key=other), rp=rp) == "unknown_kid"
    assert idp.hits["jwks"] == 2  # within the interval: no re-fetch


async def test_many_unknown_kids_cost_one_fetch_per_interval(idp: HostileIdp) -> None:
    provider = provider_for(idp)
    rp = RelyingParty((provider,), LEEWAY)
    for index in range(20):
        assert await refused(idp, by_stranger(idp, f"stranger-{index}"), rp=rp) == "unknown_kid"
    assert idp.hits["jwks"] == 2  # the first fetch, and one re-fetch


# --- claims ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("changes", "reason"), [
    ({"iss": "http://127.0.0.1:1"}, "wrong_issuer"),
    ({"iss": OMIT}, "wrong_issuer"),
    ({"aud": "another-client"}, "wrong_audience"),
    ({"aud": OMIT}, "wrong_audience"),
    ({"aud": [CLIENT_ID, "another-client"]}, "wrong_audience"),  # several audiences and no azp
    ({"aud": [CLIENT_ID, "another-client"], "azp": "another-client"}, "wrong_audience"),
    ({"azp": "another-client"}, "wrong_audience"),  # one audience, but an azp that is not Deputy
    ({"aud": [7]}, "wrong_audience"),
    ({"exp": FromNow(-LEEWAY - 5)}, "expired"),
    ({"iat": FromNow(LEEWAY + 60)}, "issued_in_future"),
    ({"nbf": FromNow(LEEWAY + 60)}, "issued_in_future"),
    ({"nonce": OMIT}, "nonce_mismatch"),
    ({"nonce": "a-nonce-from-another-sign-in"}, "nonce_mismatch"),
    ({"nonce": 12345}, "nonce_mismatch"),
    ({"sub": OMIT}, "malformed"),
    ({"sub": ""}, "malformed"),
    ({"sub": "s" * 256}, "malformed"),
    ({"sub": 42}, "malformed"),
    ({"exp": OMIT}, "malformed"),
    ({"iat": OMIT}, "malformed"),
    ({"exp": 1e300}, "malformed"),
    ({"iat": "yesterday"}, "malformed"),
], ids=lambda value: ",".join(f"{k}" for k in value) if isinstance(value, dict) else str(value))
async def test_a_claim_that_fails_core_3_1_3_7_is_refused(idp: HostileIdp, changes: dict[str, Any],
                                                          reason: str) -> None:
    assert await refused(idp, lambda n: idp.sign(valid(idp, n, **changes))) == reason


async def test_an_expired_token_within_the_leeway_is_accepted(idp: HostileIdp) -> None:
    """The leeway is what the configuration says, not more: the boundary cases beside the refusals above."""
    provider = provider_for(idp)
    rp = RelyingParty((provider,), LEEWAY)
    now = int(time.time())
    await sign_in(rp, idp, provider, lambda n: idp.sign(valid(idp, n, exp=now - LEEWAY + 10, iat=now + LEEWAY - 10)))


async def test_max_age_sent_needs_a_recent_auth_time(idp: HostileIdp) -> None:
    provider = provider_for(idp)
    rp = RelyingParty((provider,), LEEWAY)
    for auth_time, reason in ((OMIT, "authentication_too_old"), (int(time.time()) - 3600, "authentication_too_old"),
                              ("noon", "malformed")):
        url, pending = await rp.start(provider.name, max_age=60)
        nonce = dict(p.split("=", 1) for p in url.split("?", 1)[1].split("&"))["nonce"]
        idp.id_token = idp.sign(valid(idp, nonce, auth_time=auth_time))
        with pytest.raises(IdTokenRefused) as info:
            await rp.finish(pending, {"code": "c", "state": pending.state, "iss": idp.issuer})
        assert info.value.reason == reason


# --- shapes ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("token", [
    "not a jwt", "a.b", "a.b.c.d.e", "", 12345, None, ["x"],
    "eyJhbGciOiJFUzI1NiJ9.!!!.sig",
])
async def test_what_is_not_a_compact_jws_is_malformed(idp: HostileIdp, token: Any) -> None:
    assert await refused(idp, lambda n: token) == "malformed"


async def test_a_huge_id_token_is_refused_unparsed(idp: HostileIdp) -> None:
    assert await refused(idp, lambda n: idp.sign(valid(idp, n, padding="x" * 20_000))) == "malformed"


async def test_a_deeply_nested_payload_is_refused(idp: HostileIdp) -> None:
    assert await refused(idp, lambda n: idp.sign(valid(idp, n, deep=json.loads("[" * 200 + "]" * 200)))) == \
        "malformed"


async def test_a_critical_header_is_refused(idp: HostileIdp) -> None:
    assert await refused(idp, lambda n: idp.sign(valid(idp, n), header={"crit": ["exp"], "exp": 1})) == "malformed"


async def test_a_payload_that_is_not_an_object_is_refused(idp: HostileIdp) -> None:
    assert await refused(idp, lambda n: sign({"alg": "ES256", "kid": idp.keys.ec_key.kid}, b'["a"]',
                                             idp.keys.ec_key)) == "malformed"


async def test_concurrent_unknown_kids_share_one_refetch(idp: HostileIdp) -> None:
    provider = provider_for(idp)
    rp = RelyingParty((provider,), LEEWAY)
    await sign_in(rp, idp, provider)
    before = idp.hits["jwks"]

    async def one(index: int) -> str:
        return await refused(idp, lambda n: idp.sign(valid(idp, n), key=unknown_key(f"c-{index}")), rp=rp)

    assert await asyncio.gather(*(one(i) for i in range(10))) == ["unknown_kid"] * 10
    assert idp.hits["jwks"] == before + 1


async def test_after_the_interval_an_unknown_kid_may_fetch_again(idp: HostileIdp) -> None:
    provider = provider_for(idp)
    rp = RelyingParty((provider,), LEEWAY)
    with clock.frozen() as frozen:
        for kid in ("s1", "s2"):
            assert await refused(idp, by_stranger(idp, kid), rp=rp) == "unknown_kid"
            assert idp.hits["jwks"] == 2  # the first fetch and one re-fetch, then none within the interval
        frozen.advance(REFETCH_INTERVAL)
        assert await refused(idp, by_stranger(idp, "s3"), rp=rp) == "unknown_kid"
        assert idp.hits["jwks"] == 3
