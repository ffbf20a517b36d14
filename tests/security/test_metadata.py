"""Discovery documents and token endpoint caching.

RFC 8414, RFC 9728, RFC 9207, OAuth 2.1 §3.2.3; MCP AS-2, AS-5, RS-1, RS-2, RS-10.
"""

from __future__ import annotations

import httpx
import pytest

from tests.security.helpers import metadata_url
from tests.support.deputy_process import RunningDeputy
from tests.support.oauth_flow import OMIT, authorize, exchange, post_token, refresh


# No openid-configuration: Deputy issues no ID tokens (issue 12; tests/security/test_discovery_claims.py).
@pytest.mark.parametrize("path", ["/.well-known/oauth-authorization-server"])
async def test_authorization_server_metadata(deputy: RunningDeputy, path: str) -> None:
    """MCP AS-2, AS-5 / RFC 8414 §3.3: issuer exact, S256 only, iss response parameter advertised."""
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{deputy.url}{path}")
    assert response.status_code == 200
    document = response.json()
    assert document["issuer"] == deputy.url
    assert document["code_challenge_methods_supported"] == ["S256"]
    assert document["authorization_response_iss_parameter_supported"] is True
    assert document["authorization_endpoint"] == f"{deputy.url}/authorize"
    assert document["token_endpoint"] == f"{deputy.url}/token"
    assert document["response_types_supported"] == ["code"]
    assert "implicit" not in document["grant_types_supported"]
    assert "password" not in document["grant_types_supported"]


@pytest.mark.parametrize("server", ["demo", "other"])
async def test_protected_resource_metadata_at_path_inserted_url(deputy: RunningDeputy, server: str) -> None:
    """MCP RS-1, RS-2, RS-10 / RFC 9728 §3: PRM resource == canonical URI, authorization_servers == [issuer]."""
    async with httpx.AsyncClient() as http:
        response = await http.get(metadata_url(deputy, server))
    assert response.status_code == 200
    document = response.json()
    assert document["resource"] == deputy.resource(server)
    assert document["authorization_servers"] == [deputy.url]
    assert document["bearer_methods_supported"] == ["header"]
    assert "offline_access" not in document["scopes_supported"]


async def test_protected_resource_metadata_for_unknown_server_is_404(deputy: RunningDeputy) -> None:
    """RFC 9728 §3: no metadata for a resource Deputy does not protect."""
    async with httpx.AsyncClient() as http:
        response = await http.get(metadata_url(deputy, "nope"))
    assert response.status_code == 404


def assert_no_store(response: httpx.Response) -> None:
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["content-type"].startswith("application/json")


async def test_token_endpoint_success_and_refresh_are_no_store(
        deputy: RunningDeputy, browser: httpx.AsyncClient) -> None:
    """OAuth 2.1 §3.2.3: token responses carry Cache-Control: no-store (code and refresh grants)."""
    auth = await authorize(deputy, browser=browser)
    issued = await exchange(deputy, auth.code, verifier=auth.verifier or "")
    assert issued.status_code == 200
    assert_no_store(issued)
    rotated = await refresh(deputy, issued.json()["refresh_token"])
    assert rotated.status_code == 200
    assert_no_store(rotated)


async def test_token_endpoint_errors_are_no_store(deputy: RunningDeputy) -> None:
    """OAuth 2.1 §3.2.4: error answers of the token endpoint carry Cache-Control: no-store too."""
    bad_grant = await exchange(deputy, "no-such-code", verifier="x" * 43)
    assert bad_grant.status_code == 400
    assert_no_store(bad_grant)
    no_verifier = await exchange(deputy, "no-such-code", verifier=OMIT)
    assert_no_store(no_verifier)
    unsupported = await post_token(deputy, [("grant_type", "password"), ("username", "alice"), ("password", "x")])
    assert unsupported.status_code == 400
    assert unsupported.json()["error"] == "unsupported_grant_type"
    assert_no_store(unsupported)
