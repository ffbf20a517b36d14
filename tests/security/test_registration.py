"""Dynamic client registration under the default `loopback` policy (RFC 7591 §3.2.2; MCP AS-4, AS-8; RFC 8252 §7.3).

Other policies, RFC 7592 management and the rate limit: test_registration_policies.py; software statements:
test_software_statements.py.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.security.helpers import oauth_error
from tests.support.deputy_process import RunningDeputy


async def register(deputy: RunningDeputy, metadata: dict[str, Any]) -> httpx.Response:
    body = {"client_name": "Registration test", "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"], **metadata}
    async with httpx.AsyncClient() as http:
        return await http.post(f"{deputy.url}/register", json=body)


@pytest.mark.parametrize("uri", [
    "https://attacker.example/callback",
    "http://attacker.example/callback",
    "http://localhost.attacker.example/callback",
    "http://127.0.0.1.nip.io/callback",
    "http://10.0.0.1/callback",
    "http://user@127.0.0.1/callback",
    "javascript:alert(1)",
    "custom-scheme:/callback",
])
async def test_non_loopback_redirect_uri_is_refused(deputy: RunningDeputy, uri: str) -> None:
    """MCP AS-4 (registration policy) / AS-8: only http loopback redirect URIs register → 400 invalid_redirect_uri."""
    response = await register(deputy, {"redirect_uris": [uri]})
    assert response.status_code == 400
    assert oauth_error(response) == "invalid_redirect_uri"


async def test_one_bad_uri_among_good_ones_is_refused(deputy: RunningDeputy) -> None:
    """MCP AS-4: every redirect URI must pass; a loopback URI does not smuggle in an attacker one."""
    response = await register(deputy, {"redirect_uris": ["http://localhost:8080/cb", "https://attacker.example/cb"]})
    assert response.status_code == 400
    assert oauth_error(response) == "invalid_redirect_uri"


@pytest.mark.parametrize("uri", ["http://127.0.0.1:8080/callback#frag", "http://127.0.0.1:8080/callback#"])
async def test_redirect_uri_with_fragment_is_refused(deputy: RunningDeputy, uri: str) -> None:
    """RFC 6749 §3.1.2: a redirect URI must not have a fragment → 400 invalid_redirect_uri."""
    response = await register(deputy, {"redirect_uris": [uri]})
    assert response.status_code == 400
    assert oauth_error(response) == "invalid_redirect_uri"


@pytest.mark.parametrize("uri", ["http://127.0.0.1/*", "http://127.0.0.1:8080/cb*", "http://*.localhost/cb"])
async def test_wildcard_redirect_uri_is_refused(deputy: RunningDeputy, uri: str) -> None:
    """MCP AS-8 (exact match): wildcards in redirect URIs → 400 invalid_redirect_uri."""
    response = await register(deputy, {"redirect_uris": [uri]})
    assert response.status_code == 400
    assert oauth_error(response) == "invalid_redirect_uri"


@pytest.mark.parametrize("redirect_uris", [None, [], "http://127.0.0.1/cb", [42]])
async def test_missing_or_malformed_redirect_uris_are_refused(deputy: RunningDeputy, redirect_uris: Any) -> None:
    """RFC 7591 §2: redirect_uris is a non-empty array of strings → 400 invalid_redirect_uri."""
    metadata = {} if redirect_uris is None else {"redirect_uris": redirect_uris}
    response = await register(deputy, metadata)
    assert response.status_code == 400
    assert oauth_error(response) == "invalid_redirect_uri"


@pytest.mark.parametrize("metadata", [
    {"application_type": "web", "redirect_uris": ["https://app.example/cb"]},
    {"grant_types": ["client_credentials"]},
    {"grant_types": ["authorization_code", "implicit"]},
    {"grant_types": ["urn:ietf:params:oauth:grant-type:jwt-bearer"]},
    {"response_types": ["token"]},
    {"token_endpoint_auth_method": "private_key_jwt"},
], ids=["web", "client_credentials", "implicit", "jwt-bearer", "response_type_token", "private_key_jwt"])
async def test_disallowed_metadata_is_invalid_client_metadata(deputy: RunningDeputy, metadata: dict[str, Any]) -> None:
    """MCP AS-4 / RFC 7591 §3.2.2: web apps, other grants, implicit, private_key_jwt without keys → 400
    invalid_client_metadata."""
    response = await register(deputy, {"redirect_uris": ["http://localhost:8080/cb"], **metadata})
    assert response.status_code == 400
    assert oauth_error(response) == "invalid_client_metadata"


async def test_non_json_body_is_invalid_client_metadata(deputy: RunningDeputy) -> None:
    """RFC 7591 §3.1: the request is JSON; a form body → 400 invalid_client_metadata."""
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{deputy.url}/register", data={"redirect_uris": "http://127.0.0.1/cb"})
    assert response.status_code == 400
    assert oauth_error(response) == "invalid_client_metadata"


async def test_loopback_native_client_registers(deputy: RunningDeputy) -> None:
    """MCP AS-4 / RFC 7591 §3.2.1: a native loopback client → 201 with client_id, no secret, Cache-Control no-store."""
    uris = ["http://localhost:33418/callback", "http://[::1]:33418/callback"]
    response = await register(deputy, {"redirect_uris": uris, "application_type": "native"})
    assert response.status_code == 201, response.text
    body = response.json()
    assert isinstance(body["client_id"], str) and body["client_id"]
    assert body["redirect_uris"] == uris
    assert body["token_endpoint_auth_method"] == "none"
    assert "client_secret" not in body
    assert response.headers["cache-control"] == "no-store"
