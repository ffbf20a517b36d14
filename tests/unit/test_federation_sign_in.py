"""Issue 14, item 2: a sign-in through a provider, end to end against a local provider over real HTTP.

Abuse first — who may not sign in (``allowed_email_domains``, ``required_groups``), claims that do not fit and an
e-mail address the provider has not verified (kept nowhere, never the username: OpenID Connect Core 1.0 §5.7) —
then the happy paths: client_secret_basic (RFC 6749 §2.3.1), client_secret_post, private_key_jwt (RFC 7523 §3)
with EC and RSA keys, the authentication request (OpenID Connect Core 1.0 §3.1.2.1, RFC 7636 S256), claim
mapping, admission, key rotation.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote_plus

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, OKPKey, RSAKey

from deputy.federation.errors import NotAdmitted
from deputy.federation.relying_party import RelyingParty
from tests.support.hostile_idp import (
    CLIENT_ID,
    CLIENT_SECRET,
    LEEWAY,
    Answer,
    HostileIdp,
    hostile_idp,
    provider_for,
    sent_parameters,
    sign_in,
)
from tests.support.idp import OMIT, SigningKey


@pytest.fixture
async def idp() -> AsyncIterator[HostileIdp]:
    async with hostile_idp() as served:
        yield served


async def signed_in_with(idp: HostileIdp, claims: dict[str, Any], **entry: Any) -> Any:
    provider = provider_for(idp, **entry)
    return await sign_in(RelyingParty((provider,), LEEWAY), idp, provider,
                         lambda nonce: idp.sign(idp.claims(client_id=CLIENT_ID, **{"nonce": nonce, **claims})))


async def not_admitted(idp: HostileIdp, claims: dict[str, Any], **entry: Any) -> str:
    with pytest.raises(NotAdmitted) as info:
        await signed_in_with(idp, claims, **entry)
    return info.value.reason


# --- who may not sign in -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("claims", "reason"), [
    ({"email": "mallory@evil.example"}, "email_domain_not_allowed"),
    ({"email": "alice@sub.example.com"}, "email_domain_not_allowed"),  # exact domains, no subdomains
    ({"email": "alice@example.com.evil.example"}, "email_domain_not_allowed"),
    ({"email": "alice@example.com@evil.example"}, "email_not_verified"),  # two @: not an address at all
    ({"email_verified": False}, "email_not_verified"),
    ({"email_verified": "true"}, "email_not_verified"),  # only the JSON true
    ({"email_verified": OMIT}, "email_not_verified"),
    ({"email": OMIT}, "email_not_verified"),
])
async def test_an_address_outside_the_allowed_domains_or_unverified_is_refused(idp: HostileIdp,
                                                                               claims: dict[str, Any],
                                                                               reason: str) -> None:
    assert await not_admitted(idp, claims, allowed_email_domains=["example.com"]) == reason


@pytest.mark.parametrize("groups", [["staff"], [], OMIT, "staff"])
async def test_a_user_in_none_of_the_required_groups_is_refused(idp: HostileIdp, groups: Any) -> None:
    assert await not_admitted(idp, {"groups": groups}, required_groups=["finance", "admins"]) == \
        "not_in_required_groups"


@pytest.mark.parametrize("groups", [["finance", 7], ["finance", {"id": "x"}], ["finance", ""], {"finance": True},
                                    ["g"] * 257, ["x" * 257], ["line\nbreak"], 12])
async def test_a_groups_claim_that_does_not_fit_refuses_the_sign_in_rather_than_dropping_members(
        idp: HostileIdp, groups: Any) -> None:
    assert await not_admitted(idp, {"groups": groups}) == "bad_claims"


@pytest.mark.parametrize("value", [{"nested": "object"}, [1, 2], ["a", "b"], "x" * 300, 2**60, 1.5])
async def test_an_extra_claim_that_does_not_fit_refuses_the_sign_in(idp: HostileIdp, value: Any) -> None:
    assert await not_admitted(idp, {"department": value}, extra_claims=["department"]) == "bad_claims"


async def test_without_the_configured_username_claim_nobody_signs_in(idp: HostileIdp) -> None:
    assert await not_admitted(idp, {}, username_claim="employee_id") == "no_username"
    assert await not_admitted(idp, {"employee_id": "e\u202e1"}, username_claim="employee_id") == "no_username"


# An address the provider has not verified may be anyone's (OpenID Connect Core 1.0 §5.7): mallory sets the CFO's.
UNVERIFIED = [False, "true", 1, OMIT]


@pytest.mark.parametrize("verified", UNVERIFIED)
async def test_an_unverified_email_is_not_kept(idp: HostileIdp, verified: Any) -> None:
    identity = await signed_in_with(idp, {"email": "cfo@corp.example", "email_verified": verified})
    assert (identity.email, identity.email_verified, identity.username) == (None, False, "alice")


@pytest.mark.parametrize("verified", UNVERIFIED)
async def test_an_unverified_email_does_not_become_the_username(idp: HostileIdp, verified: Any) -> None:
    identity = await signed_in_with(idp, {"email": "cfo@corp.example", "email_verified": verified,
                                          "preferred_username": OMIT})
    assert (identity.username, identity.email) == ("alice-sub-1", None)  # the next claim: sub


async def test_an_unverified_email_as_the_configured_username_refuses_the_sign_in(idp: HostileIdp) -> None:
    assert await not_admitted(idp, {"email": "cfo@corp.example", "email_verified": False},
                              username_claim="email") == "no_username"


async def test_an_operator_may_carry_the_raw_email_claim_as_an_extra_claim(idp: HostileIdp) -> None:
    """A provider that sends no ``email_verified`` (Entra ID) and is trusted for it: ``extra_claims``."""
    identity = await signed_in_with(idp, {"email": "alice@example.com", "email_verified": OMIT},
                                    extra_claims=["email"])
    assert (identity.email, identity.extra_claims) == (None, {"email": "alice@example.com"})


# --- happy paths -------------------------------------------------------------------------------------------------

async def test_client_secret_basic_sign_in_with_pkce(idp: HostileIdp) -> None:
    provider = provider_for(idp)
    rp = RelyingParty((provider,), LEEWAY)
    url, pending = await rp.start(provider.name, prompt="login", max_age=300)
    sent = sent_parameters(url)
    assert url.startswith(idp.url("/authorize?"))
    assert sent == {"response_type": "code", "client_id": CLIENT_ID, "scope": "openid email profile",
                    "redirect_uri": "https://deputy.example.com/login/callback/hostile", "state": pending.state,
                    "nonce": pending.nonce, "code_challenge_method": "S256", "prompt": "login", "max_age": "300",
                    "code_challenge": base64.urlsafe_b64encode(hashlib.sha256(pending.code_verifier.encode())
                                                               .digest()).rstrip(b"=").decode()}
    assert len({pending.state, pending.nonce, pending.code_verifier}) == 3 and len(pending.code_verifier) >= 43
    idp.id_token = idp.sign(idp.claims(client_id=CLIENT_ID, nonce=pending.nonce, auth_time=int(time.time())))
    identity = await rp.finish(pending, {"code": "the-code", "state": pending.state, "iss": idp.issuer})
    assert (identity.idp, identity.issuer, identity.subject, identity.username, identity.email,
            identity.email_verified, identity.name, identity.groups) == (
        "hostile", idp.issuer, "alice-sub-1", "alice", "alice@example.com", True, "Alice", ("finance", "staff"))
    [request] = idp.token_requests
    assert request.form == {"grant_type": "authorization_code", "code": "the-code",
                            "redirect_uri": provider.redirect_uri, "code_verifier": pending.code_verifier}
    scheme, _, encoded = request.headers["authorization"].partition(" ")
    user, _, password = base64.b64decode(encoded).decode().partition(":")
    assert (scheme, unquote_plus(user), unquote_plus(password)) == ("Basic", CLIENT_ID, CLIENT_SECRET)
    assert "idp-access-token" not in repr(identity) and "the-code" not in repr(identity)
    assert pending.state not in repr(pending) and pending.code_verifier not in repr(pending)


async def test_client_secret_post_when_the_provider_takes_only_that(idp: HostileIdp) -> None:
    idp.metadata_changes["token_endpoint_auth_methods_supported"] = ["client_secret_post"]
    await signed_in_with(idp, {})
    [request] = idp.token_requests
    assert (request.form["client_id"], request.form["client_secret"]) == (CLIENT_ID, CLIENT_SECRET)
    assert "authorization" not in request.headers


@pytest.mark.parametrize("kind", ["ec_pem", "rsa_jwk"])
async def test_private_key_jwt_sign_in(idp: HostileIdp, tmp_path: Path, kind: str) -> None:
    key: ECKey | RSAKey
    if kind == "ec_pem":
        key = ECKey.generate_key("P-256", private=True)
        (tmp_path / "key").write_bytes(key.as_pem(private=True))
    else:
        key = RSAKey.generate_key(2048, parameters={"kid": "deputy-rsa"}, private=True)
        (tmp_path / "key").write_text(json.dumps(key.as_dict(private=True)))
    await signed_in_with(idp, {}, base_dir=tmp_path, client_secret=OMIT, private_key_file="key")
    [request] = idp.token_requests
    assert "authorization" not in request.headers and "client_secret" not in request.form
    assert request.form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    token = jwt.decode(request.form["client_assertion"], key, algorithms=["ES256", "RS256"])
    claims = token.claims
    assert (claims["iss"], claims["sub"], claims["aud"]) == (CLIENT_ID, CLIENT_ID, idp.url("/token"))
    assert 0 < claims["exp"] - claims["iat"] <= 60 and len(claims["jti"]) >= 43
    assert token.header["kid"] == ("deputy-rsa" if kind == "rsa_jwk" else key.thumbprint())


async def test_group_and_claim_mapping(idp: HostileIdp) -> None:
    identity = await signed_in_with(idp, {"roles": "finance", "preferred_username": OMIT, "department": "Ops",
                                          "clearance": 3},
                                    groups_claim="roles", extra_claims=["department", "clearance", "absent"])
    assert identity.groups == ("finance",)  # a single string is one group
    assert identity.username == "alice@example.com"  # preferred_username absent: the e-mail
    assert identity.extra_claims == {"department": "Ops", "clearance": 3}


async def test_the_subject_names_the_user_when_nothing_else_does(idp: HostileIdp) -> None:
    identity = await signed_in_with(idp, {"preferred_username": OMIT, "email": OMIT, "groups": OMIT})
    assert (identity.username, identity.email, identity.groups) == ("alice-sub-1", None, ())


async def test_admission_by_verified_domain_and_any_required_group(idp: HostileIdp) -> None:
    identity = await signed_in_with(idp, {"email": "Alice@EXAMPLE.com", "groups": ["staff"]},
                                    allowed_email_domains=["Example.com"], required_groups=["admins", "staff"])
    assert identity.email == "Alice@EXAMPLE.com"


async def test_rs256_and_a_rotated_key_are_accepted(idp: HostileIdp) -> None:
    provider = provider_for(idp)
    rp = RelyingParty((provider,), LEEWAY)
    await sign_in(rp, idp, provider, lambda n: idp.sign(idp.claims(client_id=CLIENT_ID, nonce=n), alg="RS256"))
    idp.keys.rotate()  # the provider signs with a new kid: Deputy fetches its set again, once
    await sign_in(rp, idp, provider)
    assert (idp.hits["jwks"], idp.hits["discovery"]) == (2, 1)


async def test_an_iss_is_optional_from_a_provider_that_does_not_send_one(idp: HostileIdp) -> None:
    idp.metadata_changes["authorization_response_iss_parameter_supported"] = OMIT
    provider = provider_for(idp)
    await sign_in(RelyingParty((provider,), LEEWAY), idp, provider, query={"iss": OMIT})


async def test_an_authorization_endpoint_query_is_kept(idp: HostileIdp) -> None:
    idp.metadata_changes["authorization_endpoint"] = idp.url("/authorize?tenant=t1&state=theirs")
    provider = provider_for(idp, scopes=["openid", "groups"])
    url, pending = await RelyingParty((provider,), LEEWAY).start(provider.name)
    sent = sent_parameters(url)
    assert (sent["tenant"], sent["state"], sent["scope"]) == ("t1", pending.state, "openid groups")
    assert "prompt" not in sent and "max_age" not in sent


@pytest.mark.parametrize(("alg", "make"), [
    ("ES384", lambda: ECKey.generate_key("P-384", parameters={"kid": "p384"}, private=True)),
    ("PS256", lambda: RSAKey.generate_key(2048, parameters={"kid": "ps"}, private=True)),
    ("EdDSA", lambda: OKPKey.generate_key("Ed25519", parameters={"kid": "ed"}, private=True)),
    ("Ed25519", lambda: OKPKey.generate_key("Ed25519", parameters={"kid": "ed"}, private=True)),
])
async def test_each_asymmetric_algorithm_deputy_allows_verifies(idp: HostileIdp, alg: str,
                                                                make: Callable[[], SigningKey]) -> None:
    key = make()
    idp.metadata_changes["id_token_signing_alg_values_supported"] = [alg]
    idp.jwks_answer = Answer(200, {"keys": [key.as_dict(private=False)]})
    provider = provider_for(idp)
    identity = await sign_in(RelyingParty((provider,), LEEWAY), idp, provider,
                             lambda n: idp.sign(idp.claims(client_id=CLIENT_ID, nonce=n), alg=alg, key=key))
    assert identity.subject == "alice-sub-1"
