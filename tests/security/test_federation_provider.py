"""Issue 14, items 2 and 5: a hostile or broken provider, and forged or replayed callbacks, sign nobody in.

Discovery (OpenID Connect Discovery 1.0 §4: issuer exact, PKCE S256 required), the JWK Set (private or symmetric
keys, size), the token endpoint (errors, redirects, size), and the authorization response: ``state``, RFC 9207
``iss`` (mix-up between two providers, RFC 9700 §4.4) and ``error=``. Each refusal is a typed reason.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from joserfc.jwk import OctKey, RSAKey

from deputy import clock
from deputy.federation.errors import CallbackRefused, ProviderUnavailable, SignInFailed
from deputy.federation.relying_party import PENDING_TTL, PendingSignIn, RelyingParty
from tests.support.hostile_idp import LEEWAY, Answer, HostileIdp, hostile_idp, provider_for, sign_in
from tests.support.idp import OMIT


@pytest.fixture
async def idp() -> AsyncIterator[HostileIdp]:
    async with hostile_idp() as served:
        yield served


async def failure(idp: HostileIdp, *, query: dict[str, Any] | None = None, **entry: Any) -> SignInFailed:
    provider = provider_for(idp, **entry)
    with pytest.raises(SignInFailed) as info:
        await sign_in(RelyingParty((provider,), LEEWAY), idp, provider, query=query)
    assert info.value.idp == idp.name
    return info.value


async def provider_failure(idp: HostileIdp, **entry: Any) -> str:
    error = await failure(idp, **entry)
    assert isinstance(error, ProviderUnavailable), error
    return error.reason


# --- discovery ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("changes", [
    {"issuer": "http://127.0.0.1:1"},
    {"issuer": "HTTP://127.0.0.1:{port}"},  # the same URL to a URL parser, another string to Discovery §4.3
    {"issuer": "http://127.0.0.1:{port}/"},
    {"issuer": OMIT},
    {"code_challenge_methods_supported": ["plain"]},
    {"code_challenge_methods_supported": OMIT},
    {"response_types_supported": ["id_token"]},
    {"jwks_uri": OMIT},
    {"token_endpoint": OMIT},
    {"authorization_endpoint": "javascript:alert(1)"},
    {"token_endpoint": "http://evil.example/token"},  # plain http off loopback
    {"jwks_uri": "ftp://127.0.0.1/jwks"},
    {"token_endpoint_auth_methods_supported": "client_secret_basic"},
])
async def test_a_discovery_document_deputy_cannot_trust_is_refused(idp: HostileIdp, changes: dict[str, Any]) -> None:
    idp.metadata_changes.update({k: v.format(port=idp.port) if isinstance(v, str) else v for k, v in changes.items()})
    error = await failure(idp)
    assert (type(error), error.reason) == (ProviderUnavailable, "discovery_failed")
    assert idp.hits["token"] == 0


@pytest.mark.parametrize("methods", [["plain"], [], "S256"])
async def test_assuming_pkce_never_overrides_a_list_of_methods_without_s256(idp: HostileIdp, methods: Any) -> None:
    """``assume_pkce_s256`` stands in for a missing list only: a provider that lists its methods has said."""
    idp.metadata_changes["code_challenge_methods_supported"] = methods
    error = await failure(idp, assume_pkce_s256=True)
    assert (type(error), error.reason) == (ProviderUnavailable, "discovery_failed")


async def test_a_provider_that_leaves_the_methods_out_signs_in_when_the_operator_assumes_s256(
        idp: HostileIdp) -> None:
    """Microsoft Entra ID's discovery document has no code_challenge_methods_supported; it checks S256."""
    idp.metadata_changes["code_challenge_methods_supported"] = OMIT
    provider = provider_for(idp, assume_pkce_s256=True)
    identity = await sign_in(RelyingParty((provider,), LEEWAY), idp, provider)
    assert identity.issuer == idp.issuer


async def test_a_discovery_document_that_is_not_an_object_is_refused(idp: HostileIdp) -> None:
    idp.discovery_answer = Answer(200, b'["issuer"]')
    assert await provider_failure(idp) == "discovery_failed"


async def test_a_redirect_on_discovery_is_not_followed(idp: HostileIdp) -> None:
    async with hostile_idp("elsewhere") as elsewhere:
        idp.discovery_answer = Answer(302, b"", {"Location": elsewhere.url("/.well-known/openid-configuration")})
        assert await provider_failure(idp) == "discovery_failed"
        assert elsewhere.hits["discovery"] == 0


@pytest.mark.parametrize("declared", [True, False])
async def test_an_oversized_discovery_document_is_refused(idp: HostileIdp, declared: bool) -> None:
    body = b'{"issuer": "' + b"x" * (128 * 1024) + b'"}'
    idp.discovery_answer = Answer(200, body) if declared else Answer(200, body, {"Transfer-Encoding": "chunked"})
    assert await provider_failure(idp) == "discovery_failed"


async def test_a_provider_that_is_down_fails_the_sign_in_and_is_tried_again_on_the_next(idp: HostileIdp) -> None:
    provider = provider_for(idp)
    rp = RelyingParty((provider,), LEEWAY)
    idp.discovery_answer = Answer(503, b"down")
    with pytest.raises(ProviderUnavailable) as info:
        await rp.start(provider.name)
    assert (info.value.reason, info.value.idp) == ("discovery_failed", idp.name)
    assert "503" in info.value.detail
    idp.discovery_answer = None
    await sign_in(rp, idp, provider)  # not cached as failed: the next use asks again


async def test_an_unreachable_provider_is_a_typed_failure() -> None:
    async with hostile_idp() as gone:
        provider = provider_for(gone)
    with pytest.raises(ProviderUnavailable) as info:
        await RelyingParty((provider,), LEEWAY).start(provider.name)
    assert info.value.reason == "discovery_failed"


# --- the JWK Set -------------------------------------------------------------------------------------------------

def served_set(idp: HostileIdp, kind: str) -> dict[str, Any]:
    public = idp.keys.jwks()["keys"]
    if kind == "private":
        return {"keys": [idp.keys.ec_key.as_dict(private=True), *public]}
    if kind == "symmetric":
        return {"keys": [*public, OctKey.generate_key(256, parameters={"kid": "hmac"}).as_dict()]}
    if kind == "small_rsa":
        return {"keys": [RSAKey.generate_key(1024, parameters={"kid": "weak"}).as_dict(private=False)]}
    return {"keys": []}


@pytest.mark.filterwarnings("ignore::joserfc.errors.SecurityWarning")  # the 1024-bit key, made on purpose
@pytest.mark.parametrize("keys", ["private", "symmetric", "small_rsa", "empty"])
async def test_a_jwk_set_deputy_cannot_trust_is_refused(idp: HostileIdp, keys: str) -> None:
    idp.jwks_answer = Answer(200, served_set(idp, keys))
    assert await provider_failure(idp) == "keys_unavailable"


@pytest.mark.parametrize("answer", [Answer(200, b'{"keys": [' + b" " * (100 * 1024) + b"]}"),
                                    Answer(302, b"", {"Location": "/elsewhere"}), Answer(500, b"{}"),
                                    Answer(200, b'["keys"]')],
                         ids=["oversized", "redirect", "error", "not_a_set"])
async def test_a_jwk_set_that_cannot_be_read_is_refused(idp: HostileIdp, answer: Answer) -> None:
    idp.jwks_answer = answer
    assert await provider_failure(idp) == "keys_unavailable"


# --- the token endpoint ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("answer", [
    Answer(400, {"error": "invalid_grant", "error_description": "code used"}),
    Answer(401, {"error": "invalid_client"}),
    Answer(302, b"", {"Location": "https://evil.example/token"}),
    Answer(200, {"access_token": "a", "token_type": "Bearer"}),  # no id_token
    Answer(200, b"not json"),
    Answer(200, b'{"id_token": "' + b"x" * (100 * 1024) + b'"}'),
], ids=["invalid_grant", "invalid_client", "redirect", "no_id_token", "not_json", "oversized"])
async def test_a_token_endpoint_failure_signs_nobody_in(idp: HostileIdp, answer: Answer) -> None:
    idp.token_answer = answer
    assert await provider_failure(idp) == "token_request_failed"


async def test_a_provider_without_a_client_authentication_deputy_has_is_refused(idp: HostileIdp) -> None:
    idp.metadata_changes["token_endpoint_auth_methods_supported"] = ["tls_client_auth"]
    assert await provider_failure(idp) == "token_request_failed"
    assert idp.hits["token"] == 0


# --- the authorization response ----------------------------------------------------------------------------------

async def callback_failure(idp: HostileIdp, query: dict[str, Any]) -> CallbackRefused:
    error = await failure(idp, query=query)
    assert isinstance(error, CallbackRefused), error
    assert idp.hits["token"] == 0  # the code went nowhere
    return error


@pytest.mark.parametrize("state", ["another-browsers-state", "", OMIT])
async def test_a_state_that_is_not_this_browsers_is_refused(idp: HostileIdp, state: Any) -> None:
    assert (await callback_failure(idp, {"state": state})).reason == "state_mismatch"


async def test_a_sign_in_left_too_long_is_refused(idp: HostileIdp) -> None:
    provider = provider_for(idp)
    rp = RelyingParty((provider,), LEEWAY)
    with clock.frozen() as frozen:
        _url, pending = await rp.start(provider.name)
        frozen.advance(PENDING_TTL + 1)
        with pytest.raises(CallbackRefused) as info:
            await rp.finish(pending, {"code": "c", "state": pending.state, "iss": idp.issuer})
    assert info.value.reason == "state_expired"


async def test_a_response_from_another_provider_is_refused_before_its_code_is_used(idp: HostileIdp) -> None:
    """Mix-up (RFC 9700 §4.4): the browser started at ``idp``; the response says another issuer produced it."""
    async with hostile_idp("other") as other:
        provider, other_provider = provider_for(idp), provider_for(other)
        rp = RelyingParty((provider, other_provider), LEEWAY)
        with pytest.raises(CallbackRefused) as info:
            await sign_in(rp, idp, provider, query={"iss": other.issuer})
        assert info.value.reason == "issuer_mismatch"
        assert (idp.hits["token"], other.hits["token"]) == (0, 0)


async def test_a_pending_sign_in_of_one_provider_cannot_be_finished_with_another(idp: HostileIdp) -> None:
    """The pending sign-in names its provider: the caller cannot finish it through another's metadata."""
    async with hostile_idp("other") as other:
        provider, other_provider = provider_for(idp), provider_for(other)
        rp = RelyingParty((provider, other_provider), LEEWAY)
        _url, pending = await rp.start(provider.name)
        moved = PendingSignIn(other.name, pending.state, pending.nonce, pending.code_verifier, pending.created_at)
        other.id_token = idp.sign(idp.claims(client_id=provider.client_id, nonce=pending.nonce))
        with pytest.raises(SignInFailed) as info:
            await rp.finish(moved, {"code": "c", "state": pending.state, "iss": other.issuer})
        assert info.value.reason == "unknown_kid"  # checked with other's keys, which never signed it


@pytest.mark.parametrize("iss", ["http://127.0.0.1:1", "", "HTTP://127.0.0.1:{port}"])
async def test_an_iss_other_than_the_providers_is_refused(idp: HostileIdp, iss: str) -> None:
    assert (await callback_failure(idp, {"iss": iss.format(port=idp.port)})).reason == "issuer_mismatch"


async def test_a_missing_iss_is_refused_when_the_provider_says_it_sends_one(idp: HostileIdp) -> None:
    assert (await callback_failure(idp, {"iss": OMIT})).reason == "issuer_missing"


async def test_an_error_from_the_provider_ends_the_sign_in(idp: HostileIdp) -> None:
    error = await callback_failure(idp, {"error": "access_denied", "code": OMIT,
                                         "error_description": "no\x1b[2J\nway\u202e" + "x" * 500})
    assert (error.reason, error.error) == ("idp_error", "access_denied")
    assert error.detail.isascii() or error.detail.endswith("…")
    assert all(" " <= c <= "~" for c in error.detail.rstrip("…")) and len(error.detail) < 300


async def test_an_error_code_that_is_not_a_code_is_not_repeated(idp: HostileIdp) -> None:
    error = await callback_failure(idp, {"error": "<script>alert(1)</script>", "code": OMIT})
    assert (error.reason, error.error) == ("idp_error", "invalid")


async def test_an_error_with_another_providers_iss_is_a_mix_up_first(idp: HostileIdp) -> None:
    error = await callback_failure(idp, {"error": "access_denied", "iss": "http://127.0.0.1:1"})
    assert error.reason == "issuer_mismatch"


async def test_a_response_without_a_code_is_refused(idp: HostileIdp) -> None:
    assert (await callback_failure(idp, {"code": OMIT})).reason == "code_missing"


@pytest.mark.parametrize(("prompt", "max_age"), [("login consent evil", None), ("", None), (None, -1)])
async def test_start_refuses_a_prompt_or_max_age_that_is_not_one(idp: HostileIdp, prompt: str | None,
                                                                 max_age: int | None) -> None:
    provider = provider_for(idp)
    with pytest.raises(ValueError):
        await RelyingParty((provider,), LEEWAY).start(provider.name, prompt=prompt, max_age=max_age)
