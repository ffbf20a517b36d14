"""The code flow, refresh and revocation toward an upstream's authorization server (issue 15, items 1 and 5):
hostile callbacks (RFC 9207 ``iss``, ``error=``, no code) and token responses first, then what goes on the wire —
PKCE S256, ``resource`` (RFC 8707), client authentication (basic, post, none, private_key_jwt) — refresh with
rotation and refusal, RFC 7009 revocation.
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qs, unquote_plus, urlsplit

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from deputy import clock
from deputy.connections.authorization import AuthorizationClient, signing_key
from deputy.connections.errors import ConnectionFailed
from deputy.connections.model import (
    AuthorizationServer,
    PendingConnection,
    UpstreamClient,
    UpstreamProtection,
    UpstreamTokens,
)
from deputy.connections.redirect_uris import RedirectUris
from deputy.connections.token_responses import MAX_LIFETIME
from deputy.connections.upstream_http import UpstreamHttp
from deputy.oauth import pkce
from tests.unit.connections.upstream_site import Answer, UpstreamSite, server_for, upstream_site

DEPUTY = RedirectUris("https://deputy.example")
REDIRECT_URI = "https://deputy.example/connect/callback/tracker"  # server_for's "tracker": its own (RFC 9700 §4.4.2)
CLIENT = UpstreamClient("client one", "a secret: with/odd+chars", "client_secret_basic", "registered")


@pytest.fixture
async def site() -> AsyncIterator[UpstreamSite]:
    async with upstream_site() as served:
        yield served


def protection(site: UpstreamSite, scopes: tuple[str, ...] | None = ("mcp:read",), **changes: Any
               ) -> UpstreamProtection:
    fields: dict[str, Any] = {"issuer": site.base, "authorization_endpoint": f"{site.base}/authorize?tenant=t1",
                              "token_endpoint": f"{site.base}/token", "revocation_endpoint": f"{site.base}/revoke",
                              "iss_parameter_supported": True, **changes}
    return UpstreamProtection(site.mcp_url, AuthorizationServer(**fields), scopes)


def flow() -> AuthorizationClient:
    return AuthorizationClient(UpstreamHttp(), DEPUTY)


def started(site: UpstreamSite, found: UpstreamProtection | None = None,
            client: UpstreamClient = CLIENT) -> tuple[dict[str, list[str]], PendingConnection]:
    url, pending = flow().start(server_for(site), found or protection(site), client, user_id="alice", scope=None,
                                ttl=600, now=1000)
    return parse_qs(urlsplit(url).query), pending


async def redeemed(site: UpstreamSite, query: dict[str, str], found: UpstreamProtection | None = None,
                   client: UpstreamClient = CLIENT) -> UpstreamTokens:
    found = found or protection(site)
    _, pending = started(site, found, client)
    return await flow().redeem(server_for(site), found, client, pending, query)


async def redeem_refused(site: UpstreamSite, query: dict[str, str], **changes: Any) -> ConnectionFailed:
    with pytest.raises(ConnectionFailed) as info:
        await redeemed(site, query, protection(site, **changes))
    return info.value


def jwt_token(claims: dict[str, Any]) -> str:
    key = ECKey.generate_key("P-256")
    return jwt.encode({"alg": "ES256", "typ": "at+jwt"}, claims, key)


# --- callbacks that are not to be believed ------------------------------------------------------------------------

@pytest.mark.parametrize("iss", ["https://evil.example.com", "{base}/", "HTTP://127.0.0.1:{port}", "{base} ", ""])
@pytest.mark.parametrize("advertised", [True, False])
async def test_an_iss_other_than_the_recorded_issuer_is_refused_before_the_code_goes_anywhere(
        site: UpstreamSite, iss: str, advertised: bool) -> None:
    """RFC 9207 §2.4: simple string comparison, no normalization, advertised or not (iss-wrong-issuer,
    iss-normalized, iss-unexpected)."""
    failure = await redeem_refused(site, {"code": "c", "iss": iss.format(base=site.base, port=site.port)},
                                   iss_parameter_supported=advertised)
    assert failure.reason == "issuer_mismatch" and site.requests("/token") == []


async def test_a_missing_iss_is_refused_where_the_server_advertises_it(site: UpstreamSite) -> None:
    failure = await redeem_refused(site, {"code": "c"})
    assert failure.reason == "issuer_missing" and site.requests("/token") == []


async def test_a_metadata_document_flow_answered_without_iss_is_refused_before_the_code_goes_anywhere(
        site: UpstreamSite) -> None:
    """Deputy's metadata document is the same client at every server: with no iss, an answer from another server
    (mix-up, RFC 9700 §4.4) could not be told from this one's — even where this server does not advertise RFC 9207."""
    document = UpstreamClient("https://deputy.example/connect/client-metadata.json", None, "none",
                              "metadata_document")
    found = protection(site, iss_parameter_supported=False)
    _, pending = started(site, found, document)
    with pytest.raises(ConnectionFailed) as info:
        await flow().redeem(server_for(site), found, document, pending, {"code": "c", "state": pending.state})
    assert info.value.reason == "issuer_missing" and site.requests("/token") == []


async def test_an_error_response_from_another_issuer_is_not_believed_either(site: UpstreamSite) -> None:
    failure = await redeem_refused(site, {"error": "access_denied", "iss": "https://evil.example.com"})
    assert failure.reason == "issuer_mismatch"


@pytest.mark.parametrize(("error", "code"), [("access_denied", "access_denied"), ("a<script>", "invalid"),
                                             ("x" * 65, "invalid"), ("", "invalid")])
async def test_an_error_ends_the_flow_with_the_servers_code(site: UpstreamSite, error: str, code: str) -> None:
    failure = await redeem_refused(site, {"error": error, "error_description": "no\nway", "iss": site.base})
    assert (failure.reason, failure.error) == ("authorization_denied", code)
    assert "\n" not in failure.detail and site.requests("/token") == []


@pytest.mark.parametrize("query", [{"iss": "{base}"}, {"iss": "{base}", "code": ""}])
async def test_a_response_without_a_code_is_refused(site: UpstreamSite, query: dict[str, str]) -> None:
    failure = await redeem_refused(site, {k: v.format(base=site.base) for k, v in query.items()})
    assert failure.reason == "code_missing"


async def test_a_flow_started_with_another_authorization_server_is_not_finished_with_this_one(
        site: UpstreamSite) -> None:
    _, pending = started(site)
    moved = protection(site, issuer=f"{site.base}/moved")
    with pytest.raises(ConnectionFailed) as info:
        await flow().redeem(server_for(site), moved, CLIENT, pending, {"code": "c", "iss": site.base})
    assert info.value.reason == "issuer_mismatch" and site.requests("/token") == []


# --- token responses Deputy does not keep -------------------------------------------------------------------------

@pytest.mark.parametrize("answer", [
    Answer(200, b"access_token=x&token_type=bearer", media_type="application/x-www-form-urlencoded"),
    Answer(200, ["at"]),
    Answer(200, {"token_type": "Bearer"}),
    Answer(200, {"access_token": "", "token_type": "Bearer"}),
    Answer(200, {"access_token": 7, "token_type": "Bearer"}),
    Answer(200, {"access_token": "x" * 20000, "token_type": "Bearer"}),
    Answer(200, {"access_token": "at", "token_type": "mac"}),
    Answer(200, {"access_token": "at", "token_type": "DPoP"}),
    Answer(200, {"access_token": "at"}),
    Answer(200, {"access_token": "at", "token_type": "Bearer", "expires_in": -5}),
    Answer(200, {"access_token": "at", "token_type": "Bearer", "expires_in": "soon"}),
    Answer(200, {"access_token": "at", "token_type": "Bearer", "expires_in": True}),
    Answer(200, {"access_token": "at", "token_type": "Bearer", "refresh_token": ["rt"]}),
    Answer(200, {"access_token": "at", "token_type": "Bearer", "scope": ["mcp:read"]}),
    Answer(200, b'{"access_token": "' + b"x" * 70000 + b'", "token_type": "Bearer"}'),  # past the body cap
])
async def test_a_token_response_deputy_cannot_use_is_refused(site: UpstreamSite, answer: Answer) -> None:
    site.token_answer = answer
    failure = await redeem_refused(site, {"code": "c", "iss": site.base})
    assert failure.reason == "token_response_invalid"


@pytest.mark.parametrize("claims", [
    {"aud": "https://other.example/mcp"}, {"aud": ["https://other.example/mcp"]}, {"aud": 5},
    {"aud": "{mcp}", "iss": "https://evil.example.com"},
])
async def test_a_jwt_access_token_for_another_resource_or_from_another_issuer_is_refused(
        site: UpstreamSite, claims: dict[str, Any]) -> None:
    claims = {k: v.format(mcp=site.mcp_url) if isinstance(v, str) else v for k, v in claims.items()}
    site.token_answer = Answer(body={"access_token": jwt_token(claims), "token_type": "Bearer"})
    assert (await redeem_refused(site, {"code": "c", "iss": site.base})).reason == "token_response_invalid"


async def test_a_jwt_access_token_naming_the_resource_among_others_is_kept(site: UpstreamSite) -> None:
    token = jwt_token({"aud": ["https://other.example", site.mcp_url.upper().replace("/MCP", "/mcp")],
                       "iss": site.base})
    site.token_answer = Answer(body={"access_token": token, "token_type": "bearer"})
    assert (await redeemed(site, {"code": "c", "iss": site.base})).access_token == token


@pytest.mark.parametrize(("status", "error", "reason"), [
    (400, "invalid_grant", "token_request_failed"), (401, "invalid_client", "token_request_failed"),
    (500, "server_error", "upstream_unavailable"), (503, None, "upstream_unavailable"),
])
async def test_a_refused_code_says_why(site: UpstreamSite, status: int, error: str | None, reason: str) -> None:
    site.token_answer = Answer(status, {"error": error} if error else b"")
    failure = await redeem_refused(site, {"code": "c", "iss": site.base})
    assert (failure.reason, failure.error) == (reason, error)


async def test_an_unreachable_token_endpoint_is_the_upstream_unavailable(site: UpstreamSite) -> None:
    failure = await redeem_refused(site, {"code": "c", "iss": site.base}, token_endpoint="http://127.0.0.1:9/token")
    assert failure.reason == "upstream_unavailable"


# --- what goes on the wire ----------------------------------------------------------------------------------------

async def test_the_authorization_request_carries_pkce_state_resource_and_scope(site: UpstreamSite) -> None:
    query, pending = started(site)
    assert {k: v[0] for k, v in query.items()} == {
        "tenant": "t1", "response_type": "code", "client_id": "client one", "redirect_uri": REDIRECT_URI,
        "state": pending.state, "code_challenge": pkce.s256(pending.code_verifier), "code_challenge_method": "S256",
        "resource": site.mcp_url, "scope": "mcp:read"}
    assert len(pending.state) >= 43 and len(pending.code_verifier) >= 43 and pending.state != pending.code_verifier
    assert (pending.user_id, pending.issuer, pending.resource, pending.expires_at) == ("alice", site.base,
                                                                                      site.mcp_url, 1600)
    again, _ = started(site)
    assert again["state"] != query["state"]


@pytest.mark.parametrize(("auth", "secret", "redirect_uri"), [
    ("none", None, REDIRECT_URI),  # a public client's code is anyone's to redeem: its own redirect URI
    ("client_secret_basic", "s", "https://deputy.example/connect/callback"),  # the shared one operators registered
])
async def test_a_configured_client_uses_its_own_redirect_uri_when_public(site: UpstreamSite, auth: str,
                                                                         secret: str | None, redirect_uri: str
                                                                         ) -> None:
    server = server_for(site, client_id="corp", client_secret=secret, client_auth=auth, authorization_server=site.base)
    _, pending = flow().start(server, protection(site), UpstreamClient("corp", secret, auth, "configured"),
                              user_id="alice", scope=None, ttl=600, now=1000)
    assert pending.redirect_uri == redirect_uri


async def test_no_scope_is_sent_when_none_was_chosen(site: UpstreamSite) -> None:
    query, pending = started(site, protection(site, scopes=None))
    assert "scope" not in query and pending.scope is None


async def test_the_code_is_redeemed_with_verifier_redirect_uri_and_resource(site: UpstreamSite) -> None:
    found = protection(site)
    _, pending = started(site, found)
    with clock.frozen(5000):
        tokens = await flow().redeem(server_for(site), found, CLIENT, pending, {"code": "the code", "iss": site.base})
    assert tokens == UpstreamTokens("at-1", "rt-1", 5000 + 3600, "mcp:read")
    [request] = site.requests("/token")
    assert request.form == {"grant_type": "authorization_code", "code": "the code", "redirect_uri": REDIRECT_URI,
                            "code_verifier": pending.code_verifier, "resource": site.mcp_url}
    # RFC 6749 §2.3.1: each part form-encoded before joining with ":".
    user, _, password = base64.b64decode(request.headers["authorization"].removeprefix("Basic ")).decode().partition(
        ":")
    assert (unquote_plus(user), unquote_plus(password)) == (CLIENT.client_id, CLIENT.client_secret)


async def test_an_iss_is_not_needed_where_the_server_does_not_advertise_it(site: UpstreamSite) -> None:
    tokens = await redeemed(site, {"code": "c"}, protection(site, iss_parameter_supported=False))
    assert tokens.access_token == "at-1"


async def test_a_lifetime_past_the_bound_is_cut_and_a_missing_one_stays_unknown(site: UpstreamSite) -> None:
    site.token_answer = Answer(body={"access_token": "at", "token_type": "Bearer", "expires_in": 10**12})
    with clock.frozen(5000):
        assert (await redeemed(site, {"code": "c", "iss": site.base})).expires_at == 5000 + MAX_LIFETIME
    site.token_answer = Answer(body={"access_token": "at", "token_type": "Bearer", "scope": "mcp:less"})
    tokens = await redeemed(site, {"code": "c", "iss": site.base})
    assert (tokens.expires_at, tokens.refresh_token, tokens.scope) == (None, None, "mcp:less")


@pytest.mark.parametrize(("method", "secret"), [("client_secret_post", "s3"), ("none", None)])
async def test_client_authentication_in_the_body(site: UpstreamSite, method: str, secret: str | None) -> None:
    client = UpstreamClient("client-2", secret, method, "registered")
    await redeemed(site, {"code": "c", "iss": site.base}, client=client)
    [request] = site.requests("/token")
    assert "authorization" not in request.headers
    assert request.form["client_id"] == "client-2" and request.form.get("client_secret") == secret


async def test_private_key_jwt_signs_an_assertion_for_the_token_endpoint(site: UpstreamSite) -> None:
    key = ECKey.generate_key("P-256")
    private = {**key.as_dict(private=True), "kid": "k1"}
    server = server_for(site, client_id="signed", private_key=private, client_auth="private_key_jwt")
    client = UpstreamClient("signed", None, "private_key_jwt", "configured")
    found = protection(site)
    _, pending = flow().start(server, found, client, user_id="alice", scope=None, ttl=600, now=1)
    await flow().redeem(server, found, client, pending, {"code": "c", "iss": site.base})
    [request] = site.requests("/token")
    assert request.form["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    token = jwt.decode(request.form["client_assertion"], ECKey.import_key(key.as_dict(private=False)))
    assert token.header["kid"] == "k1" and token.header["alg"] == "ES256"
    assert (token.claims["iss"], token.claims["sub"], token.claims["aud"]) == ("signed", "signed",
                                                                             f"{site.base}/token")
    assert token.claims["exp"] - token.claims["iat"] == 60 and "client_secret" not in request.form


async def test_private_key_jwt_without_a_key_is_refused_unsent(site: UpstreamSite) -> None:
    client = UpstreamClient("signed", None, "private_key_jwt", "configured")
    with pytest.raises(ConnectionFailed) as info:
        await redeemed(site, {"code": "c", "iss": site.base}, client=client)
    assert info.value.reason == "no_client_authentication" and site.requests("/token") == []


# --- refresh and revocation ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("status", "error", "reason"), [
    (400, "invalid_grant", "refresh_refused"), (401, "invalid_client", "refresh_refused"),
    (400, None, "refresh_refused"), (502, None, "upstream_unavailable"),
])
async def test_a_refused_refresh_says_whether_to_reconnect(site: UpstreamSite, status: int, error: str | None,
                                                           reason: str) -> None:
    site.token_answer = Answer(status, {"error": error} if error else b"")
    with pytest.raises(ConnectionFailed) as info:
        await flow().refresh(server_for(site), protection(site), CLIENT, "rt-old", None)
    assert (info.value.reason, info.value.error) == (reason, error)
    assert "rt-old" not in str(info.value)


async def test_a_refresh_with_the_token_endpoint_down_is_the_upstream_unavailable(site: UpstreamSite) -> None:
    with pytest.raises(ConnectionFailed) as info:
        await flow().refresh(server_for(site), protection(site, token_endpoint="http://127.0.0.1:9/token"), CLIENT,
                             "rt-old", None)
    assert info.value.reason == "upstream_unavailable"


async def test_a_refresh_sends_the_resource_and_honours_rotation(site: UpstreamSite) -> None:
    rotated = await flow().refresh(server_for(site), protection(site), CLIENT, "rt-old", "mcp:read")
    assert (rotated.access_token, rotated.refresh_token) == ("at-1", "rt-1")
    [request] = site.requests("/token")
    assert request.form == {"grant_type": "refresh_token", "refresh_token": "rt-old", "resource": site.mcp_url,
                            "scope": "mcp:read"}
    site.token_answer = Answer(body={"access_token": "at-2", "token_type": "Bearer"})
    kept = await flow().refresh(server_for(site), protection(site), CLIENT, "rt-1", None)
    assert (kept.access_token, kept.refresh_token) == ("at-2", None)  # none came: the caller keeps its own
    assert "scope" not in site.requests("/token")[1].form


async def test_revocation_is_sent_where_offered_and_skipped_otherwise(site: UpstreamSite) -> None:
    await flow().revoke(server_for(site), protection(site), CLIENT, "rt-1", "refresh_token")
    [request] = site.requests("/revoke")
    assert request.form == {"token": "rt-1", "token_type_hint": "refresh_token"}
    assert request.headers["authorization"].startswith("Basic ")
    await flow().revoke(server_for(site), protection(site, revocation_endpoint=None), CLIENT, "rt-1",
                        "refresh_token")
    assert len(site.requests("/revoke")) == 1


async def test_a_revocation_endpoint_that_fails_is_reported(site: UpstreamSite) -> None:
    site.answers["/revoke"] = Answer(503, b"")
    with pytest.raises(ConnectionFailed) as info:
        await flow().revoke(server_for(site), protection(site), CLIENT, "rt-1", "refresh_token")
    assert info.value.reason == "upstream_unavailable"



@pytest.mark.parametrize(("key", "declared", "algorithm"), [
    (ECKey.generate_key("P-384"), None, "ES384"), (RSAKey.generate_key(2048), None, "RS256"),
    (RSAKey.generate_key(2048), "PS256", "PS256"),
])
def test_a_configured_private_jwk_signs_with_its_own_alg_or_its_curves(key: Any, declared: str | None,
                                                                        algorithm: str) -> None:
    jwk = {**key.as_dict(private=True), **({"alg": declared} if declared else {})}
    signing = signing_key(jwk)
    assert (signing.algorithm, signing.kid) == (algorithm, key.thumbprint())
    assertion = jwt.encode({"alg": signing.algorithm}, {"iss": "x"}, signing.key, algorithms=[signing.algorithm])
    assert jwt.decode(assertion, key, algorithms=[algorithm]).claims == {"iss": "x"}


def test_a_private_jwk_that_is_not_a_key_is_refused() -> None:
    with pytest.raises(ValueError):
        signing_key({"kty": "EC", "crv": "P-256", "d": "not-a-key"})
