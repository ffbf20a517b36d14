"""The test OpenID Provider (tests/support/oidc_op.py: oidc-provider under Node 22) does what federation tests rely on.

Each test plays the relying party by hand: OpenID Connect Core 1.0 §3.1 (authorization code flow),
RFC 7636 (PKCE S256), RFC 9207 (``iss`` in the authorization response), and ID token checks
(Core §3.1.3.7) done with joserfc against the OP's JWKS; the sign-in is walked headlessly, and once
in Chromium. One OP serves the module; the mix-up test starts a second one beside it.
"""

from __future__ import annotations

import secrets
import shutil
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.errors import BadSignatureError
from joserfc.jwk import ECKey, KeySet

from tests.support.browser import CHROMIUM, CHROMIUM_FLAGS
from tests.support.databases import require
from tests.support.oauth_flow import Pkce
from tests.support.oidc_op import (
    ALICE,
    BOB,
    Account,
    OpClient,
    OpenIdProvider,
    OpSignInError,
    openid_provider,
    sign_in_at_op,
    sign_in_at_op_async,
)
from tests.support.sdk_client import parse_redirect

REDIRECT_URI = "http://127.0.0.1:9/login/callback/test-op"  # never followed: the walk stops at it
SECRET = secrets.token_urlsafe(32)
BASIC_CLIENT = OpClient("deputy-basic", (REDIRECT_URI,), client_secret=SECRET)
CLIENT_KEY = ECKey.generate_key("P-256", parameters={"kid": "deputy-rp-1", "alg": "ES256", "use": "sig"})
JWT_CLIENT = OpClient(
    "deputy-jwt",
    (REDIRECT_URI,),
    auth_method="private_key_jwt",
    jwks={"keys": [CLIENT_KEY.as_dict(private=False)]},
    id_token_alg="ES256",
)
ALL_SCOPES = "openid email profile groups"


@pytest.fixture(scope="module")
def op() -> Iterator[OpenIdProvider]:
    with openid_provider([BASIC_CLIENT, JWT_CLIENT]) as running:
        yield running


@pytest.fixture(scope="module")
def metadata(op: OpenIdProvider) -> dict[str, Any]:
    response = httpx.get(op.discovery_url)
    response.raise_for_status()
    document: dict[str, Any] = response.json()
    return document


@dataclass(frozen=True)
class Request:
    """One authorization request, and what the RP must remember of it."""

    url: str
    state: str
    nonce: str
    pkce: Pkce


def authorization_request(metadata: Mapping[str, Any], client: OpClient, scope: str = ALL_SCOPES,
                          **extra: str) -> Request:
    state, nonce, pkce = secrets.token_urlsafe(16), secrets.token_urlsafe(16), Pkce.new()
    params: dict[str, str] = {
        "response_type": "code", "client_id": client.client_id, "redirect_uri": REDIRECT_URI, "scope": scope,
        "state": state, "nonce": nonce, "code_challenge": pkce.challenge, "code_challenge_method": "S256",
    }
    params.update(extra)
    params = {name: value for name, value in params.items() if value}  # "" leaves a parameter out
    return Request(f"{metadata['authorization_endpoint']}?{httpx.QueryParams(params)}", state, nonce, pkce)


def token_request(metadata: Mapping[str, Any], client: OpClient, code: str, verifier: str) -> httpx.Response:
    """RFC 6749 §4.1.3, with the client's authentication (RFC 6749 §2.3.1 or RFC 7523 §2.2)."""
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT_URI, "code_verifier": verifier}
    if client.auth_method == "private_key_jwt":
        now = int(time.time())
        data["client_assertion_type"] = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
        data["client_assertion"] = jwt.encode(
            {"alg": "ES256", "kid": "deputy-rp-1"},
            {"iss": client.client_id, "sub": client.client_id, "aud": metadata["issuer"],
             "jti": secrets.token_urlsafe(16), "iat": now, "exp": now + 60},
            CLIENT_KEY,
        )
        return httpx.post(metadata["token_endpoint"], data=data)
    assert client.client_secret is not None
    return httpx.post(metadata["token_endpoint"], data=data, auth=(client.client_id, client.client_secret))


def verified_id_token(metadata: Mapping[str, Any], id_token: str, client: OpClient, nonce: str) -> jwt.Token:
    """Core §3.1.3.7: signature against the OP's JWKS, then iss, aud, exp, iat and nonce."""
    keys = KeySet.import_key_set(httpx.get(metadata["jwks_uri"]).json())
    token = jwt.decode(id_token, keys, algorithms=[client.id_token_alg])
    jwt.JWTClaimsRegistry(
        iss={"essential": True, "value": metadata["issuer"]},
        aud={"essential": True, "value": client.client_id},
        nonce={"essential": True, "value": nonce},
        exp={"essential": True},
        iat={"essential": True},
    ).validate(token.claims)
    return token


def assert_names(claims: Mapping[str, Any], account: Account) -> None:
    assert claims["sub"] == account.username
    assert claims["email"] == account.email
    assert claims["email_verified"] is True
    assert claims["preferred_username"] == account.username
    assert claims["name"] == account.name
    assert tuple(claims["groups"]) == account.groups


def test_discovery_names_the_issuer_exactly_and_the_code_flow_with_pkce_s256_and_iss(
    op: OpenIdProvider, metadata: dict[str, Any]
) -> None:
    assert metadata["issuer"] == op.issuer  # Discovery §4.3: identical, no trailing slash
    assert op.issuer.startswith("http://127.0.0.1:")
    assert metadata["response_types_supported"] == ["code"]
    assert metadata["code_challenge_methods_supported"] == ["S256"]
    assert metadata["authorization_response_iss_parameter_supported"] is True
    assert {"openid", "email", "profile", "groups"} <= set(metadata["scopes_supported"])
    assert {"client_secret_basic", "private_key_jwt"} <= set(metadata["token_endpoint_auth_methods_supported"])
    keys = httpx.get(metadata["jwks_uri"]).json()["keys"]
    assert {key["alg"] for key in keys} == {"ES256", "RS256"}
    assert all("d" not in key for key in keys)  # the public halves only


def test_alice_signs_in_and_her_rs256_id_token_names_her_groups_and_email(metadata: dict[str, Any]) -> None:
    request = authorization_request(metadata, BASIC_CLIENT)
    with httpx.Client() as browser:
        redirect = sign_in_at_op(browser, request.url, ALICE.username, ALICE.password)
    assert redirect.url.startswith(REDIRECT_URI + "?")
    assert redirect.state == request.state
    assert redirect.iss == metadata["issuer"]  # RFC 9207 §2
    assert redirect.code
    response = token_request(metadata, BASIC_CLIENT, redirect.code, request.pkce.verifier)
    assert response.status_code == 200, response.text
    token = verified_id_token(metadata, response.json()["id_token"], BASIC_CLIENT, request.nonce)
    assert token.header["alg"] == "RS256"
    assert_names(token.claims, ALICE)


async def test_bob_signs_in_through_private_key_jwt_and_his_es256_id_token_has_other_groups(
    metadata: dict[str, Any],
) -> None:
    request = authorization_request(metadata, JWT_CLIENT)
    async with httpx.AsyncClient() as browser:
        redirect = await sign_in_at_op_async(browser, request.url, BOB.username, BOB.password)
    assert redirect.state == request.state and redirect.iss == metadata["issuer"] and redirect.code
    response = token_request(metadata, JWT_CLIENT, redirect.code, request.pkce.verifier)
    assert response.status_code == 200, response.text
    token = verified_id_token(metadata, response.json()["id_token"], JWT_CLIENT, request.nonce)
    assert token.header["alg"] == "ES256"
    assert_names(token.claims, BOB)
    assert "finance" not in token.claims["groups"]


def test_groups_and_profile_are_released_only_for_their_scopes(metadata: dict[str, Any]) -> None:
    request = authorization_request(metadata, BASIC_CLIENT, scope="openid email")
    with httpx.Client() as browser:
        redirect = sign_in_at_op(browser, request.url, ALICE.username, ALICE.password)
    assert redirect.code
    response = token_request(metadata, BASIC_CLIENT, redirect.code, request.pkce.verifier)
    claims = verified_id_token(metadata, response.json()["id_token"], BASIC_CLIENT, request.nonce).claims
    assert claims["email"] == ALICE.email
    assert not {"groups", "name", "preferred_username"} & set(claims)


@pytest.mark.parametrize(
    ("challenge", "method"),
    [("", ""), ("", "S256"), ("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM", "plain")],
    ids=["no-pkce", "method-without-challenge", "plain"],
)
def test_the_op_refuses_an_authorization_request_without_pkce_s256(
    metadata: dict[str, Any], challenge: str, method: str
) -> None:
    request = authorization_request(metadata, BASIC_CLIENT, code_challenge=challenge, code_challenge_method=method)
    with httpx.Client() as browser:
        redirect = sign_in_at_op(browser, request.url, ALICE.username, ALICE.password)
    assert redirect.error == "invalid_request"
    assert redirect.code is None
    assert redirect.iss == metadata["issuer"]  # RFC 9207: error responses carry it too


def test_a_code_is_redeemed_only_with_its_verifier(metadata: dict[str, Any]) -> None:
    request = authorization_request(metadata, BASIC_CLIENT)
    with httpx.Client() as browser:
        redirect = sign_in_at_op(browser, request.url, ALICE.username, ALICE.password)
    assert redirect.code
    wrong = token_request(metadata, BASIC_CLIENT, redirect.code, Pkce.new().verifier)
    assert wrong.status_code == 400 and wrong.json()["error"] == "invalid_grant"


def test_a_wrong_password_is_refused_and_cancel_returns_access_denied(metadata: dict[str, Any]) -> None:
    with httpx.Client() as browser:
        for username, password in [(ALICE.username, BOB.password), ("mallory", "mallory-password")]:
            with pytest.raises(OpSignInError) as refused:
                sign_in_at_op(browser, authorization_request(metadata, BASIC_CLIENT).url, username, password)
            assert refused.value.response is not None and refused.value.response.status_code == 401
        request = authorization_request(metadata, BASIC_CLIENT)
        cancelled = sign_in_at_op(browser, request.url, ALICE.username, "", cancel=True)
    assert cancelled.error == "access_denied"
    assert cancelled.state == request.state and cancelled.iss == metadata["issuer"]


def test_an_op_session_skips_the_form_unless_prompt_login_asks_for_it(metadata: dict[str, Any]) -> None:
    with httpx.Client() as browser:
        sign_in_at_op(browser, authorization_request(metadata, BASIC_CLIENT).url, ALICE.username, ALICE.password)
        again = browser.get(authorization_request(metadata, BASIC_CLIENT).url)
        assert again.is_redirect and again.headers["location"].startswith(REDIRECT_URI + "?code=")
        forced = browser.get(authorization_request(metadata, BASIC_CLIENT, prompt="login").url)
        assert forced.is_redirect and forced.headers["location"].startswith("/interaction/")


def test_two_ops_at_once_have_their_own_issuer_keys_and_codes(op: OpenIdProvider, metadata: dict[str, Any]) -> None:
    with openid_provider([BASIC_CLIENT], groups="always") as second, httpx.Client() as browser:
        second_metadata = httpx.get(second.discovery_url).json()
        assert second_metadata["issuer"] == second.issuer != op.issuer
        # The same browser signs in at both: the OPs' cookies (same host, other ports) do not collide.
        first_request = authorization_request(metadata, BASIC_CLIENT)
        first = sign_in_at_op(browser, first_request.url, ALICE.username, ALICE.password)
        request = authorization_request(second_metadata, BASIC_CLIENT, scope="openid")
        redirect = sign_in_at_op(browser, request.url, BOB.username, BOB.password)
        assert redirect.iss == second.issuer and first.iss == op.issuer
        assert redirect.code and first.code
        # A code sent to the wrong OP's token endpoint (the mix-up RFC 9207 prevents) is not redeemed there.
        misdirected = token_request(metadata, BASIC_CLIENT, redirect.code, request.pkce.verifier)
        assert misdirected.status_code == 400 and misdirected.json()["error"] == "invalid_grant"
        response = token_request(second_metadata, BASIC_CLIENT, redirect.code, request.pkce.verifier)
        id_token = response.json()["id_token"]
        claims = verified_id_token(second_metadata, id_token, BASIC_CLIENT, request.nonce).claims
        assert claims["groups"] == list(BOB.groups)  # groups="always": without the groups scope
        with pytest.raises(BadSignatureError):
            verified_id_token(metadata, id_token, BASIC_CLIENT, request.nonce)
        still_signed_in = browser.get(authorization_request(metadata, BASIC_CLIENT).url)
        assert still_signed_in.headers["location"].startswith(REDIRECT_URI + "?code=")
    assert second.process.returncode is not None  # stopped on leaving the block


async def test_chromium_signs_in_at_the_op_page(metadata: dict[str, Any]) -> None:
    """What a browser test of federation does: fill the OP's form by its selectors, see the redirect back."""
    require("Debian's chromium (apt-get install chromium)", shutil.which("chromium") is not None)
    from playwright.async_api import Request as BrowserRequest
    from playwright.async_api import Route, async_playwright

    request = authorization_request(metadata, BASIC_CLIENT)
    callbacks: list[str] = []

    async def capture(route: Route, sent: BrowserRequest) -> None:
        callbacks.append(sent.url)
        await route.fulfill(status=200, content_type="text/html", body="<p>the RP received the code</p>")

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        page = await browser.new_page()
        await page.route(f"{REDIRECT_URI}*", capture)
        await page.goto(request.url)
        await page.fill("input[name=username]", BOB.username)
        await page.fill("input[name=password]", BOB.password)
        await page.click("button#sign-in")
        await page.wait_for_selector("text=the RP received the code")
        await browser.close()
    assert len(callbacks) == 1
    redirect = parse_redirect(callbacks[0])
    assert redirect.state == request.state and redirect.iss == metadata["issuer"] and redirect.code
    response = token_request(metadata, BASIC_CLIENT, redirect.code, request.pkce.verifier)
    assert_names(verified_id_token(metadata, response.json()["id_token"], BASIC_CLIENT, request.nonce).claims, BOB)
