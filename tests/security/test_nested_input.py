"""Deeply nested JSON sent to Deputy's endpoints is refused with the endpoint's own error, before any
recursive parser sees it, and Deputy keeps serving (issue 12, second review).

``json.loads`` recurses once per level: ``"[" * 5000`` exhausts the stack. Every text from outside is now read
through :mod:`deputy.bounded_json`; JOSE headers and payloads are bounded before joserfc parses them.
"""

from __future__ import annotations

import base64
import json
import time

import httpx
import pytest

from tests.security.helpers import oauth_error
from tests.support.agents import ASSERTION_TYPE
from tests.support.deputy_process import PUBLIC_CLIENT, REDIRECT_URI, RunningDeputy

DEEP = "[" * 3000  # 3 KiB, 4 in base64: within every size cap (a statement: 8 KiB), beyond the recursion limit
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


def _segment(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def _claims(deputy: RunningDeputy) -> str:
    now = int(time.time())
    return json.dumps({"iss": "agent", "sub": "agent", "aud": deputy.url, "exp": now + 60, "iat": now,
                       "jti": "j"})


def deep_header_jwt(deputy: RunningDeputy) -> str:
    header = '{"alg":"ES256","typ":"at+jwt","x":' + DEEP + "}"
    return f"{_segment(header)}.{_segment(_claims(deputy))}.{_segment('sig')}"


def deep_payload_jwt() -> str:
    payload = '{"sub":"agent","x":' + DEEP + "}"
    return f"{_segment(json.dumps({'alg': 'ES256'}))}.{_segment(payload)}.{_segment('sig')}"


async def _still_serving(deputy: RunningDeputy, http: httpx.AsyncClient) -> None:
    assert (await http.get(f"{deputy.url}/healthz")).status_code == 200


async def test_a_registration_body_nested_64k_levels_is_invalid_client_metadata(deputy: RunningDeputy) -> None:
    """Issue 12: a 64 KiB registration body of '[' is 65,536 levels; refused before parsing."""
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(f"{deputy.url}/register", content=b"[" * 65_000,
                                   headers={"Content-Type": "application/json"})
        assert response.status_code == 400 and oauth_error(response) == "invalid_client_metadata"
        await _still_serving(deputy, http)


@pytest.mark.parametrize("statement", [pytest.param("deep header", id="header"),
                                       pytest.param("deep payload", id="payload")])
async def test_a_software_statement_nested_too_deeply_is_invalid_software_statement(
        deputy: RunningDeputy, statement: str) -> None:
    """Issue 12: the statement's payload went to json.loads and its header to joserfc unbounded (500)."""
    token = deep_header_jwt(deputy) if statement == "deep header" else deep_payload_jwt()
    body = {"redirect_uris": [REDIRECT_URI], "token_endpoint_auth_method": "none", "software_statement": token}
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(f"{deputy.url}/register", json=body)
        assert response.status_code == 400, response.text
        assert oauth_error(response) == "invalid_software_statement"
        await _still_serving(deputy, http)


async def test_a_bearer_token_with_a_deep_header_is_invalid_token(deputy: RunningDeputy) -> None:
    """Issue 12: joserfc parsed the header of any presented bearer token with json.loads (RecursionError, 500)."""
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(deputy.resource(), json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                                    headers={"Authorization": f"Bearer {deep_header_jwt(deputy)}",
                                             "Accept": "application/json, text/event-stream"})
        assert response.status_code == 401
        assert 'error="invalid_token"' in response.headers["www-authenticate"]
        await _still_serving(deputy, http)


@pytest.mark.parametrize("where", ["header", "payload"])
async def test_a_client_assertion_nested_too_deeply_is_invalid_client(deputy: RunningDeputy, where: str) -> None:
    """Issue 12: the assertion's header (joserfc) and payload (peek at sub) were parsed unbounded (500)."""
    token = deep_header_jwt(deputy) if where == "header" else deep_payload_jwt()
    form = {"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE, "client_assertion": token}
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(f"{deputy.url}/token", data=form)
        assert response.status_code == 401, response.text
        assert oauth_error(response) == "invalid_client"
        await _still_serving(deputy, http)


async def test_a_jwt_bearer_assertion_with_a_deep_header_is_invalid_grant(deputy: RunningDeputy) -> None:
    """Issue 12: the grant read the assertion's typ through joserfc, which parsed the header unbounded (500)."""
    form = {"grant_type": JWT_BEARER, "assertion": deep_header_jwt(deputy), "client_id": PUBLIC_CLIENT}
    async with httpx.AsyncClient(timeout=30) as http:
        response = await http.post(f"{deputy.url}/token", data=form)
        assert response.status_code == 400, response.text
        assert oauth_error(response) in ("invalid_grant", "unauthorized_client"), response.text
        await _still_serving(deputy, http)
