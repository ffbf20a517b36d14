"""The upstream OAuth fixture (tests/support/upstream_oauth.py) is what the other issue-15 tests take it for.

Its protected MCP server challenges as RFC 9728 §5.1 says and refuses tokens for another resource
(RFC 8707 audience), its authorization server's metadata is RFC 8414 with S256 and RFC 9207, ``approve``
ends at the client's redirect with code, state and iss, and the token endpoint issues RFC 9068 JWTs whose
``aud`` is the resource; refreshes rotate and count, revocations are recorded by digest.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from mcp.client.auth.oauth2 import PKCEParameters

from tests.support.upstream_oauth import ProtectedUpstream, UpstreamAuthServer, token_digest, upstream_oauth

REDIRECT_URI = "http://127.0.0.1:9/callback"  # never fetched: approve() stops at the redirect
MCP_HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


@pytest.fixture(scope="module")
def pair() -> Iterator[tuple[UpstreamAuthServer, ProtectedUpstream]]:
    with upstream_oauth() as started:
        yield started


@dataclass
class Client:
    """A client registered at the AS by RFC 7591, as Deputy registers itself."""

    client_id: str
    metadata: dict[str, Any]


def as_metadata(server: UpstreamAuthServer) -> dict[str, Any]:
    metadata: dict[str, Any] = httpx.get(f"{server.issuer}/.well-known/oauth-authorization-server").json()
    return metadata


def register(server: UpstreamAuthServer) -> Client:
    metadata = as_metadata(server)
    answer = httpx.post(metadata["registration_endpoint"], json={
        "redirect_uris": [REDIRECT_URI], "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"], "token_endpoint_auth_method": "none",
    })
    assert answer.status_code == 201, answer.text
    return Client(answer.json()["client_id"], metadata)


def authorize(server: UpstreamAuthServer, client: Client, resource: str, pkce: PKCEParameters,
              login: str = "alice", *, consent: bool = True) -> dict[str, str]:
    query = urlencode({
        "response_type": "code", "client_id": client.client_id, "redirect_uri": REDIRECT_URI,
        "scope": "tools:read", "state": "the-state", "resource": resource,
        "code_challenge": pkce.code_challenge, "code_challenge_method": "S256",
    })
    location = server.approve(f"{client.metadata['authorization_endpoint']}?{query}", login, consent=consent)
    assert location.startswith(REDIRECT_URI + "?"), location
    return {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}


def token_for(server: UpstreamAuthServer, resource: str, login: str = "alice") -> dict[str, Any]:
    client = register(server)
    pkce = PKCEParameters.generate()
    callback = authorize(server, client, resource, pkce, login)
    answer = httpx.post(client.metadata["token_endpoint"], data={
        "grant_type": "authorization_code", "code": callback["code"], "redirect_uri": REDIRECT_URI,
        "client_id": client.client_id, "code_verifier": pkce.code_verifier, "resource": resource,
    })
    assert answer.status_code == 200, answer.text
    tokens: dict[str, Any] = answer.json()
    tokens["client_id"] = client.client_id
    return tokens


def call(upstream: ProtectedUpstream, tool: str, token: str | None) -> httpx.Response:
    headers = dict(MCP_HEADERS)
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": {}}}
    return httpx.post(upstream.url, json=body, headers=headers)


# ----------------------------------------------------------------------------- refusals first


def test_without_a_token_the_upstream_challenges_with_its_resource_metadata_and_scope(
        pair: tuple[UpstreamAuthServer, ProtectedUpstream]) -> None:
    _, upstream = pair
    answer = call(upstream, "whoami", None)
    assert answer.status_code == 401
    challenge = answer.headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
    assert f'resource_metadata="{upstream.resource_metadata_url}"' in challenge
    assert 'scope="tools:read"' in challenge


def test_a_token_for_another_resource_is_refused(pair: tuple[UpstreamAuthServer, ProtectedUpstream]) -> None:
    server, upstream = pair
    elsewhere = upstream.url.replace("/mcp", "/other")
    tokens = token_for(server, elsewhere)
    assert jwt.decode(tokens["access_token"], _keys(server)).claims["aud"] == elsewhere
    assert call(upstream, "whoami", tokens["access_token"]).status_code in {401, 403}


def test_a_forged_or_garbled_token_is_refused(pair: tuple[UpstreamAuthServer, ProtectedUpstream]) -> None:
    server, upstream = pair
    token = token_for(server, upstream.resource)["access_token"]
    header, payload, signature = token.split(".")
    flipped = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
    assert call(upstream, "whoami", f"{header}.{payload}.{flipped}").status_code == 401
    assert call(upstream, "whoami", "not-a-jwt").status_code == 401


def test_a_token_the_upstream_was_told_to_refuse_is_refused_and_others_are_not(
        pair: tuple[UpstreamAuthServer, ProtectedUpstream]) -> None:
    server, upstream = pair
    refused, kept = (token_for(server, upstream.resource)["access_token"] for _ in range(2))
    assert call(upstream, "whoami", refused).status_code == 200
    upstream.refuse(refused)
    answer = call(upstream, "whoami", refused)
    assert answer.status_code == 401
    assert f'resource_metadata="{upstream.resource_metadata_url}"' in answer.headers["www-authenticate"]
    assert call(upstream, "whoami", kept).status_code == 200


def test_admin_op_without_the_admin_scope_is_403_insufficient_scope(
        pair: tuple[UpstreamAuthServer, ProtectedUpstream]) -> None:
    server, upstream = pair
    answer = call(upstream, "admin_op", token_for(server, upstream.resource)["access_token"])
    assert answer.status_code == 403
    challenge = answer.headers["www-authenticate"]
    assert 'error="insufficient_scope"' in challenge
    assert 'scope="tools:read tools:admin"' in challenge


def test_denying_consent_returns_access_denied_with_state_and_iss(
        pair: tuple[UpstreamAuthServer, ProtectedUpstream]) -> None:
    server, upstream = pair
    callback = authorize(server, register(server), upstream.resource, PKCEParameters.generate(), consent=False)
    assert callback["error"] == "access_denied"
    assert "code" not in callback
    assert callback["state"] == "the-state"
    assert callback["iss"] == server.issuer


# ----------------------------------------------------------------------------- what it offers


def test_metadata_names_the_as_with_s256_iss_registration_and_revocation(
        pair: tuple[UpstreamAuthServer, ProtectedUpstream]) -> None:
    server, upstream = pair
    protected = httpx.get(upstream.resource_metadata_url).json()
    assert protected["resource"] == upstream.resource == upstream.url
    assert protected["authorization_servers"] == [server.issuer]
    for path in ("/.well-known/oauth-authorization-server", "/.well-known/openid-configuration"):
        metadata = httpx.get(server.issuer + path).json()
        assert metadata["issuer"] == server.issuer
        assert metadata["code_challenge_methods_supported"] == ["S256"]
        assert metadata["authorization_response_iss_parameter_supported"] is True
        assert metadata["registration_endpoint"] == f"{server.issuer}/reg"
        assert metadata["revocation_endpoint"].startswith(server.issuer)
        assert {"tools:read", "tools:admin", "offline_access"} <= set(metadata["scopes_supported"])


def test_approve_returns_the_callback_with_code_state_and_iss(
        pair: tuple[UpstreamAuthServer, ProtectedUpstream]) -> None:
    server, upstream = pair
    callback = authorize(server, register(server), upstream.resource, PKCEParameters.generate(), "bob")
    assert callback["code"]
    assert callback["state"] == "the-state"
    assert callback["iss"] == server.issuer


def test_the_token_is_an_es256_jwt_for_the_resource_and_whoami_reads_its_sub(
        pair: tuple[UpstreamAuthServer, ProtectedUpstream]) -> None:
    server, upstream = pair
    tokens = token_for(server, upstream.resource, "bob")
    decoded = jwt.decode(tokens["access_token"], _keys(server))
    assert decoded.header["alg"] == "ES256"
    assert decoded.header["typ"] == "at+jwt"
    assert decoded.claims["aud"] == upstream.resource
    assert decoded.claims["iss"] == server.issuer
    assert decoded.claims["sub"] == "bob"
    assert tokens["expires_in"] == decoded.claims["exp"] - decoded.claims["iat"] == 300
    assert tokens["refresh_token"]
    answer = call(upstream, "whoami", tokens["access_token"])
    assert answer.status_code == 200
    assert answer.json()["result"]["content"][0]["text"] == "bob"
    assert upstream.seen_authorizations()[-1] == f"Bearer {tokens['access_token']}"


def test_refresh_rotates_and_is_counted_and_revocation_is_recorded_by_digest(
        pair: tuple[UpstreamAuthServer, ProtectedUpstream]) -> None:
    server, upstream = pair
    tokens = token_for(server, upstream.resource)
    endpoint = as_metadata(server)["token_endpoint"]
    before = server.token_requests()
    refreshed = httpx.post(endpoint, data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"],
                                           "client_id": tokens["client_id"], "resource": upstream.resource})
    assert refreshed.status_code == 200, refreshed.text
    assert server.token_requests() == before + 1
    assert refreshed.json()["refresh_token"] != tokens["refresh_token"]
    reused = httpx.post(endpoint, data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"],
                                        "client_id": tokens["client_id"]})
    assert reused.status_code == 400  # rotated: the old refresh token is spent
    revoked = httpx.post(as_metadata(server)["revocation_endpoint"], data={
        "token": refreshed.json()["refresh_token"], "client_id": tokens["client_id"]})
    assert revoked.status_code == 200
    assert server.revoked_tokens()[-1] == token_digest(refreshed.json()["refresh_token"])


def _keys(server: UpstreamAuthServer) -> KeySet:
    return KeySet.import_key_set(httpx.get(as_metadata(server)["jwks_uri"]).json())
