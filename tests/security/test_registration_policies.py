"""Registration policies beyond `loopback`: allowlist, approval, off; RFC 7592; rate limit.

MCP AS-4 (a registration policy that does not auto-trust unknown clients); RFC 7591 §2
(redirect URI and key rules), §3 (initial access tokens), §3.2.2 (error codes); RFC 7592
§2 (read, update, delete with the registration access token); RFC 8252 §7 (native
redirect URIs). Each refusal is its own test. Software statements (RFC 7591 §2.3), under
the same `allowlist` policy: test_software_statements.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from joserfc.jwk import ECKey

from tests.security.helpers import assert_invalid_token, oauth_error, wait_for_status
from tests.support.deputy_process import RunningDeputy
from tests.support.oauth_flow import authorize, exchange, mcp_post, refresh
from tests.support.registration import (
    ALLOWED_HOST,
    INITIAL_TOKEN,
    allowlist_deputy,
    manage,
    register,
    registered,
    registration_deputy,
)


@pytest.fixture(scope="module")
def allowlist(backend: str, upstream_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDeputy]:
    directory = tmp_path_factory.mktemp(f"registration-allowlist-{backend}")
    with allowlist_deputy(backend, upstream_url, directory) as running:
        yield running


@pytest.fixture(scope="module")
def approval(backend: str, upstream_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDeputy]:
    directory = tmp_path_factory.mktemp(f"registration-approval-{backend}")
    with registration_deputy(backend, upstream_url, directory,
                             'mode = "approval"\nrate_limit_per_minute = 10000') as running:
        yield running


def assert_refused(response: httpx.Response, code: str) -> None:
    assert response.status_code == 400, response.text
    assert oauth_error(response) == code


# -- redirect URI rules (RFC 7591 §2, RFC 8252 §7, RFC 6749 §3.1.2) -----------------------------

@pytest.mark.parametrize("uri", [
    "javascript:alert(1)", "JavaScript:alert(document.cookie)", "data:text/html,<script>alert(1)</script>",
    "file:///etc/passwd", "vbscript:msgbox(1)",
], ids=["javascript", "javascript-case", "data", "file", "vbscript"])
async def test_executable_scheme_redirect_uri_is_refused(allowlist: RunningDeputy, uri: str) -> None:
    """javascript:/data:/file: are never redirect URIs, even with an initial access token → invalid_redirect_uri."""
    assert_refused(await register(allowlist, {"redirect_uris": [uri]}, token=INITIAL_TOKEN), "invalid_redirect_uri")


@pytest.mark.parametrize("uri", [f"https://{ALLOWED_HOST}/cb#frag", f"https://{ALLOWED_HOST}/cb#"])
async def test_fragment_is_refused(allowlist: RunningDeputy, uri: str) -> None:
    """RFC 6749 §3.1.2: no fragment, even on an allowed host → invalid_redirect_uri."""
    assert_refused(await register(allowlist, {"redirect_uris": [uri]}), "invalid_redirect_uri")


@pytest.mark.parametrize("uri", ["https://*.example.com/cb", f"https://{ALLOWED_HOST}/*", "https://*/cb"])
async def test_wildcard_is_refused(allowlist: RunningDeputy, uri: str) -> None:
    """Exact matching only (OAuth 2.1 §2.3.1): wildcard hosts or paths → invalid_redirect_uri."""
    assert_refused(await register(allowlist, {"redirect_uris": [uri]}, token=INITIAL_TOKEN), "invalid_redirect_uri")


async def test_native_non_loopback_http_is_refused(allowlist: RunningDeputy) -> None:
    """RFC 8252 §8.3: plain http for a native app only on loopback; an allowed host does not change that."""
    response = await register(allowlist, {"redirect_uris": [f"http://{ALLOWED_HOST}/cb"], "application_type": "native"},
                              token=INITIAL_TOKEN)
    assert_refused(response, "invalid_redirect_uri")


@pytest.mark.parametrize("uri", ["http://localhost:8080/cb", f"http://{ALLOWED_HOST}/cb", "com.example.app:/cb"])
async def test_web_client_may_use_https_only(allowlist: RunningDeputy, uri: str) -> None:
    """Web clients: https only — never http, not even on loopback, and no private-use schemes."""
    response = await register(allowlist, {"redirect_uris": [uri], "application_type": "web"}, token=INITIAL_TOKEN)
    assert_refused(response, "invalid_redirect_uri")


@pytest.mark.parametrize("uri", [f"https://user@{ALLOWED_HOST}/cb", f"https://user:pw@{ALLOWED_HOST}/cb",
                                 "myapp:/callback", "https:///cb", "https://exa mple.com/cb"],
                         ids=["userinfo", "userinfo-password", "scheme-without-dot", "no-host", "space"])
async def test_malformed_redirect_uri_is_refused(allowlist: RunningDeputy, uri: str) -> None:
    """No user information; private-use schemes in reverse-domain form (RFC 8252 §7.1); a real host."""
    assert_refused(await register(allowlist, {"redirect_uris": [uri]}, token=INITIAL_TOKEN), "invalid_redirect_uri")


# -- allowlist: allowed hosts, initial access tokens -------------------------------------------

async def test_allowed_host_registers_a_web_client(allowlist: RunningDeputy) -> None:
    response = await register(allowlist, {"redirect_uris": [f"https://{ALLOWED_HOST}/cb"], "application_type": "web"})
    assert response.status_code == 201, response.text
    assert response.json()["application_type"] == "web"


async def test_host_not_in_the_allowlist_is_refused(allowlist: RunningDeputy) -> None:
    """MCP AS-4: without a statement or token, every redirect host must be listed → invalid_redirect_uri."""
    uris = [f"https://{ALLOWED_HOST}/cb", "https://attacker.example/cb"]
    assert_refused(await register(allowlist, {"redirect_uris": uris}), "invalid_redirect_uri")


async def test_initial_access_token_admits_an_unlisted_redirect(allowlist: RunningDeputy) -> None:
    """RFC 7591 §3: a valid initial access token authorizes the registration."""
    response = await register(allowlist, {"redirect_uris": ["com.example.app:/cb"]}, token=INITIAL_TOKEN)
    assert response.status_code == 201, response.text
    assert response.json()["redirect_uris"] == ["com.example.app:/cb"]


@pytest.mark.parametrize("token", ["wrong-token", INITIAL_TOKEN[:-1], INITIAL_TOKEN + "x"])
async def test_wrong_initial_access_token_is_invalid_token(allowlist: RunningDeputy, token: str) -> None:
    """RFC 7591 §3 / RFC 6750 §3.1: a wrong initial access token → 401 invalid_token with a Bearer challenge."""
    response = await register(allowlist, {"redirect_uris": ["com.example.app:/cb"]}, token=token)
    assert response.status_code == 401
    assert oauth_error(response) == "invalid_token"
    assert response.headers["www-authenticate"].startswith("Bearer ")


async def test_missing_initial_access_token_is_refused(allowlist: RunningDeputy) -> None:
    assert_refused(await register(allowlist, {"redirect_uris": ["com.example.app:/cb"]}), "invalid_redirect_uri")


# -- client keys (private_key_jwt) ---------------------------------------------------------------

async def test_private_key_jwt_with_public_jwks_registers(allowlist: RunningDeputy) -> None:
    jwks = {"keys": [ECKey.generate_key("P-256", parameters={"kid": "c1"}).as_dict(private=False)]}
    response = await register(allowlist, {"redirect_uris": [f"https://{ALLOWED_HOST}/cb"],
                                          "token_endpoint_auth_method": "private_key_jwt", "jwks": jwks})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["jwks"] == jwks
    assert "client_secret" not in body


@pytest.mark.parametrize("keys", [
    {"jwks": {"keys": [ECKey.generate_key("P-256").as_dict(private=True)]}},
    {"jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"}]}},
    {"jwks_uri": "http://keys.example/jwks.json"},
    {"jwks": {"keys": [ECKey.generate_key("P-256").as_dict(private=False)]}, "jwks_uri": "https://k.example/j"},
    {},
], ids=["private-key-material", "symmetric-key", "http-jwks-uri", "both", "neither"])
async def test_private_key_jwt_key_rules(allowlist: RunningDeputy, keys: dict[str, Any]) -> None:
    """RFC 7591 §2: public keys only, https jwks_uri, not both; private_key_jwt needs one → invalid_client_metadata."""
    response = await register(allowlist, {"redirect_uris": [f"https://{ALLOWED_HOST}/cb"],
                                          "token_endpoint_auth_method": "private_key_jwt", **keys})
    assert_refused(response, "invalid_client_metadata")


async def test_confidential_client_gets_a_secret_once(allowlist: RunningDeputy) -> None:
    response = await register(allowlist, {"redirect_uris": [f"https://{ALLOWED_HOST}/cb"],
                                          "token_endpoint_auth_method": "client_secret_basic"})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["client_secret"] and body["client_secret_expires_at"] == 0
    read = await manage("GET", body["registration_client_uri"], body["registration_access_token"])
    assert read.status_code == 200 and "client_secret" not in read.json()


# -- RFC 7592 management -------------------------------------------------------------------------

async def test_read_with_the_registration_access_token(allowlist: RunningDeputy) -> None:
    """RFC 7592 §2.1: GET the configuration endpoint with the token → the client's metadata."""
    client = await registered(allowlist)
    response = await manage("GET", client["registration_client_uri"], client["registration_access_token"])
    assert response.status_code == 200, response.text
    assert response.json()["redirect_uris"] == client["redirect_uris"]
    assert response.headers["cache-control"] == "no-store"


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_management_with_wrong_or_missing_token_is_401(allowlist: RunningDeputy, method: str) -> None:
    """RFC 7592 §2: a wrong, missing or other client's token → 401 invalid_token, and nothing changes."""
    client, other = await registered(allowlist), await registered(allowlist)
    body = {"client_id": client["client_id"], "redirect_uris": client["redirect_uris"],
            "token_endpoint_auth_method": "none"}
    for token in (None, "wrong", other["registration_access_token"]):
        response = await manage(method, client["registration_client_uri"], token, body if method == "PUT" else None)
        assert response.status_code == 401, (token, response.text)
        assert oauth_error(response) == "invalid_token"
    still = await manage("GET", client["registration_client_uri"], client["registration_access_token"])
    assert still.status_code == 200


async def test_preregistered_clients_are_not_manageable(allowlist: RunningDeputy) -> None:
    """Only clients registered here are managed here: a configured client id → 401."""
    response = await manage("GET", f"{allowlist.url}/register/test-public", "anything")
    assert response.status_code == 401


async def test_update_replaces_metadata_without_a_new_secret(allowlist: RunningDeputy) -> None:
    """RFC 7592 §2.2: full replacement; a confidential client keeps its secret (none is issued again)."""
    client = await registered(allowlist, token_endpoint_auth_method="client_secret_basic")
    update = {"client_id": client["client_id"], "client_name": "Renamed",
              "redirect_uris": [*client["redirect_uris"], "http://localhost:5555/cb"],
              "token_endpoint_auth_method": "client_secret_basic", "client_secret": client["client_secret"]}
    response = await manage("PUT", client["registration_client_uri"], client["registration_access_token"], update)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["client_name"] == "Renamed"
    assert body["redirect_uris"] == update["redirect_uris"]
    assert "client_secret" not in body


async def test_update_that_widens_redirect_uris_beyond_the_policy_is_refused(allowlist: RunningDeputy) -> None:
    """The policy judges an update too: an unlisted host cannot be added with the registration token."""
    client = await registered(allowlist)
    update = {"client_id": client["client_id"], "token_endpoint_auth_method": "none",
              "redirect_uris": [*client["redirect_uris"], "https://attacker.example/cb"]}
    response = await manage("PUT", client["registration_client_uri"], client["registration_access_token"], update)
    assert_refused(response, "invalid_redirect_uri")
    read = await manage("GET", client["registration_client_uri"], client["registration_access_token"])
    assert read.json()["redirect_uris"] == client["redirect_uris"]


async def test_update_keeps_what_an_initial_access_token_admitted(allowlist: RunningDeputy) -> None:
    client = (await register(allowlist, {"redirect_uris": ["com.example.app:/cb"]}, token=INITIAL_TOKEN)).json()
    update = {"client_id": client["client_id"], "client_name": "Still mine", "token_endpoint_auth_method": "none",
              "redirect_uris": ["com.example.app:/cb"]}
    response = await manage("PUT", client["registration_client_uri"], client["registration_access_token"], update)
    assert response.status_code == 200, response.text
    widened = {**update, "redirect_uris": ["com.example.app:/cb", "com.example.other:/cb"]}
    refused = await manage("PUT", client["registration_client_uri"], client["registration_access_token"], widened)
    assert_refused(refused, "invalid_redirect_uri")


async def test_update_with_another_client_id_is_refused(allowlist: RunningDeputy) -> None:
    client, other = await registered(allowlist), await registered(allowlist)
    update = {"client_id": other["client_id"], "redirect_uris": client["redirect_uris"],
              "token_endpoint_auth_method": "none"}
    response = await manage("PUT", client["registration_client_uri"], client["registration_access_token"], update)
    assert_refused(response, "invalid_client_metadata")


async def test_delete_removes_the_client_and_revokes_its_grants(allowlist: RunningDeputy) -> None:
    """RFC 7592 §2.3: 204; the token stops working, and so do the access and refresh tokens issued to it."""
    redirect = "http://localhost:9/registered"
    client = await registered(allowlist, [redirect], grant_types=["authorization_code", "refresh_token"])
    auth = await authorize(allowlist, client_id=client["client_id"], redirect_uri=redirect)
    tokens = await exchange(allowlist, auth.code, verifier=auth.verifier or "", client_id=client["client_id"],
                            redirect_uri=redirect)
    assert tokens.status_code == 200, tokens.text
    access, refresh_token = tokens.json()["access_token"], tokens.json()["refresh_token"]
    assert (await mcp_post(allowlist, access)).status_code == 200

    deleted = await manage("DELETE", client["registration_client_uri"], client["registration_access_token"])
    assert deleted.status_code == 204
    again = await manage("GET", client["registration_client_uri"], client["registration_access_token"])
    assert again.status_code == 401
    refused = await wait_for_status(lambda: mcp_post(allowlist, access), 401)
    assert_invalid_token(allowlist, refused)
    assert (await refresh(allowlist, refresh_token, client_id=client["client_id"])).status_code in (400, 401)


# -- approval ------------------------------------------------------------------------------------

async def test_approval_client_is_pending_until_approved_then_denied(approval: RunningDeputy) -> None:
    """Under `approval` anyone registers, nobody is served until `deputy clients approve`; `deny` stops it again."""
    redirect = "http://localhost:9/pending"
    response = await register(approval, {"redirect_uris": [redirect], "client_name": "Awaiting"})
    assert response.status_code == 201, response.text
    client_id = response.json()["client_id"]

    pending = await authorize(approval, client_id=client_id, redirect_uri=redirect)
    assert pending.page is not None and pending.page.status_code == 403
    assert "Waiting for approval" in pending.page.text

    listed = approval.cli("clients", "list", "--status", "pending")
    assert listed.returncode == 0 and client_id in listed.stdout
    shown = approval.cli("clients", "show", client_id)
    assert "Awaiting" in shown.stdout and "pending" in shown.stdout
    assert approval.cli("clients", "approve", client_id).returncode == 0
    assert client_id not in approval.cli("clients", "list", "--status", "pending").stdout
    served = await authorize(approval, client_id=client_id, redirect_uri=redirect)
    assert served.redirect is not None and served.redirect.code

    denied = approval.cli("clients", "deny", client_id)
    assert denied.returncode == 0, denied.stderr
    refused = await authorize(approval, client_id=client_id, redirect_uri=redirect)
    assert refused.page is not None and refused.page.status_code == 403


async def test_approved_client_that_adds_a_redirect_uri_is_pending_again(approval: RunningDeputy) -> None:
    client = await registered(approval, ["http://localhost:9/a"])
    assert approval.cli("clients", "approve", client["client_id"]).returncode == 0
    update = {"client_id": client["client_id"], "token_endpoint_auth_method": "none",
              "redirect_uris": ["http://localhost:9/a", "https://elsewhere.example/cb"]}
    response = await manage("PUT", client["registration_client_uri"], client["registration_access_token"], update)
    assert response.status_code == 200, response.text
    shown = approval.cli("clients", "show", client["client_id"])
    assert shown.returncode == 0 and "pending" in shown.stdout


async def test_cli_show_never_prints_secrets_and_unknown_ids_fail(approval: RunningDeputy) -> None:
    client = await registered(approval, ["http://localhost:9/s"], token_endpoint_auth_method="client_secret_post")
    shown = approval.cli("clients", "show", client["client_id"])
    assert shown.returncode == 0, shown.stderr
    assert client["client_secret"] not in shown.stdout
    assert client["registration_access_token"] not in shown.stdout
    assert "client_secret_post" in shown.stdout and "set (hashed)" in shown.stdout
    for command in ("show", "approve", "deny", "remove"):
        unknown = approval.cli("clients", command, "no-such-client")
        assert unknown.returncode == 1, command
        assert "no client no-such-client" in unknown.stderr
    assert approval.cli("clients", "remove", client["client_id"]).returncode == 0
    assert approval.cli("clients", "show", client["client_id"]).returncode == 1


# -- per-address rate limit, registration off (in-process; SQLite is enough) -----------------------

def test_registration_rate_limit_is_429_with_retry_after(upstream_url: str, tmp_path: Path) -> None:
    with registration_deputy("sqlite", upstream_url, tmp_path, 'mode = "loopback"\nrate_limit_per_minute = 3') as d:
        body = {"redirect_uris": ["http://localhost:9/cb"], "token_endpoint_auth_method": "none"}
        answers = [httpx.post(f"{d.url}/register", json=body).status_code for _ in range(3)]
        assert answers == [201, 201, 201]
        limited = httpx.post(f"{d.url}/register", json=body)
        assert limited.status_code == 429
        assert int(limited.headers["retry-after"]) in range(1, 61)
        refused_too = httpx.post(f"{d.url}/register", json={"redirect_uris": ["javascript:x"]})
        assert refused_too.status_code == 429  # attempts are counted, whatever their outcome


def test_registration_off_has_no_endpoint_and_is_not_advertised(upstream_url: str, tmp_path: Path) -> None:
    with registration_deputy("sqlite", upstream_url, tmp_path, 'mode = "off"') as d:
        assert "registration_endpoint" not in httpx.get(f"{d.url}/.well-known/oauth-authorization-server").json()
        response = httpx.post(f"{d.url}/register", json={"redirect_uris": ["http://localhost:9/cb"]})
        assert response.status_code in (404, 405)
