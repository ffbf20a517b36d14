"""No redirect URI on Deputy's own host: it would receive Deputy's cookies (issue 11, finding 2).

Browsers keep cookies per host, not per port (RFC 6265 §8.5). The test Deputy serves at
``http://127.0.0.1:PORT``, so a client whose redirect URI is ``http://127.0.0.1:OTHER/…``
would be handed ``deputy_session`` with the code. Such a URI is refused wherever one enters:
dynamic registration (RFC 7591 §3.2.2) and its update (RFC 7592 §2.2), ``deputy clients
add``, and — for a row stored before the rule — ``/authorize`` (shown on a page, never
followed: RFC 6749 §4.1.2.1). ``[[clients]]`` and metadata documents: tests/unit/test_cookie_host.py.
The same client on ``localhost`` or ``[::1]`` is accepted.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import httpx
import pytest

from deputy.storage.clients import ClientRepository
from deputy.storage.db import Database
from tests.security.helpers import oauth_error
from tests.support.deputy_process import RunningDeputy
from tests.support.oauth_flow import Pkce
from tests.support.sdk_client import free_port


def deputy_host_uris() -> list[str]:
    # A fixed port: collection must give the same ids on every pytest-xdist worker (the port is any but Deputy's).
    return ["http://127.0.0.1:40917/callback", "http://127.0.0.1/callback", "http://127.0.0.1:9/a?b=c"]


async def register(deputy: RunningDeputy, uris: list[str]) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.post(f"{deputy.url}/register", json={
            "client_name": "Cookie host test", "redirect_uris": uris, "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"], "application_type": "native"})


def assert_refused_for_cookies(response: httpx.Response) -> None:
    assert response.status_code == 400, response.text
    assert oauth_error(response) == "invalid_redirect_uri"
    description = response.json()["error_description"]
    assert "cookies" in description and "localhost" in description, description


@pytest.mark.parametrize("uri", deputy_host_uris())
async def test_registration_on_deputys_host_is_refused(deputy: RunningDeputy, uri: str) -> None:
    """RFC 7591 §3.2.2: a redirect URI on Deputy's host → 400 invalid_redirect_uri saying why and what instead."""
    assert_refused_for_cookies(await register(deputy, [uri]))
    assert_refused_for_cookies(await register(deputy, ["http://localhost:4000/callback", uri]))


async def test_registration_on_another_loopback_host_is_accepted(deputy: RunningDeputy) -> None:
    """Control: localhost and [::1] are other hosts than 127.0.0.1 for a browser's cookies → 201."""
    response = await register(deputy, ["http://localhost:4000/callback", "http://[::1]:4000/callback"])
    assert response.status_code == 201, response.text


async def test_an_update_cannot_move_a_redirect_uri_onto_deputys_host(deputy: RunningDeputy) -> None:
    """RFC 7592 §2.2: the update is checked like a registration; refused, the stored client is unchanged."""
    registered = await register(deputy, ["http://localhost:4000/callback"])
    assert registered.status_code == 201, registered.text
    client: dict[str, Any] = registered.json()
    update = {"client_id": client["client_id"], "token_endpoint_auth_method": "none",
              "redirect_uris": ["http://localhost:4000/callback", f"http://127.0.0.1:{free_port()}/callback"]}
    headers = {"Authorization": f"Bearer {client['registration_access_token']}"}
    async with httpx.AsyncClient() as http:
        refused = await http.put(client["registration_client_uri"], json=update, headers=headers)
        assert_refused_for_cookies(refused)
        stored = await http.get(client["registration_client_uri"], headers=headers)
    assert stored.json()["redirect_uris"] == ["http://localhost:4000/callback"]


async def test_cli_add_refuses_deputys_host(deputy: RunningDeputy) -> None:
    """``deputy clients add`` applies the same rule: exit 2 with the reason, nothing added."""
    name = f"cli-cookie-{secrets.token_hex(4)}"
    refused = await asyncio.to_thread(deputy.cli, "clients", "add", name, "--client-id", name,
                                      "--redirect-uri", "http://127.0.0.1:7777/callback")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "cookies" in refused.stderr and "localhost" in refused.stderr
    assert (await asyncio.to_thread(deputy.cli, "clients", "show", name)).returncode == 1
    added = await asyncio.to_thread(deputy.cli, "clients", "add", name, "--client-id", name,
                                    "--redirect-uri", "http://localhost:7777/callback")
    assert added.returncode == 0, added.stderr


async def test_a_stored_client_on_deputys_host_is_refused_at_authorize(deputy: RunningDeputy) -> None:
    """Defence in depth for rows stored before the rule: /authorize shows an error page, no redirect, no cookie."""
    client_id = f"legacy-{secrets.token_hex(4)}"
    redirect_uri = f"http://127.0.0.1:{free_port()}/callback"
    database = Database(deputy.database_url)
    try:
        await ClientRepository(database.engine).put(
            client_id=client_id, client_name="Registered before the rule", redirect_uris=[redirect_uri],
            token_endpoint_auth_method="none", source="cli")
    finally:
        await database.dispose()
    query = {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri, "state": "st-legacy",
             "code_challenge": Pkce.new().challenge, "code_challenge_method": "S256",
             "resource": deputy.resource("demo")}
    async with httpx.AsyncClient() as browser:
        page = await browser.get(f"{deputy.url}/authorize", params=query)
    assert page.status_code == 400, page.text
    assert "location" not in page.headers and "set-cookie" not in page.headers
    assert "invalid_redirect_uri" in page.text and "localhost" in page.text
