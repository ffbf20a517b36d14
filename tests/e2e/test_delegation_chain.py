"""A delegation chain reaches the upstream intact, carried by a token Deputy minted for that upstream.

Alice authorizes the public test client through the official SDK client; agent A exchanges her
token with its own actor token (RFC 8693); agent B, whom A's token's ``may_act`` names,
exchanges again (chain depth 2) and calls ``whoami`` through Deputy with the SDK client. The
upstream — the demo server in ``--verify-issuer`` mode, a real process — accepts only tokens
Deputy signed for its own audience, verified with Deputy's published JWKS, and answers with
the claims it verified: the whole chain, gateway first, must be there.

Beside it, a recording upstream (the demo server's app, run here behind a request recorder)
shows what reaches an upstream configured with ``static`` headers from a file, with
``none``, and with ``exchange`` and an explicit ``upstream_audience``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import OAuthClientInformationFull

from tests.support.delegation import AGENT_A, AGENT_B, agent_own_token, claims_of, delegation_deputy, exchange_token
from tests.support.deputy_process import PASSWORD, PUBLIC_CLIENT, REDIRECT_URI, RunningDeputy
from tests.support.oauth_flow import mcp_post, tokens_for_alice
from tests.support.recording_upstream import RequestRecorder, recording_upstream
from tests.support.sdk_client import InMemoryTokenStorage, free_port, sdk_oauth_client

STATIC_VALUE = "upstream-key-from-a-secret-file"
RECORDED_AUDIENCE = "urn:example:recording-upstream"


@contextmanager
def verifying_upstream(port: int, issuer: str, log: Path) -> Iterator[str]:
    """``python -m deputy.demo --verify-issuer`` on `port`: trusts only tokens `issuer` minted for it."""
    url = f"http://127.0.0.1:{port}/mcp"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "deputy.demo", "--port", str(port),
                                    "--verify-issuer", issuer], stdout=out, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 30
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"verifying upstream exited with {process.returncode}: {log.read_text()}")
                try:
                    httpx.get(url, timeout=1.0)
                    break
                except httpx.HTTPError:
                    if time.monotonic() > deadline:
                        raise RuntimeError("verifying upstream did not answer") from None
                    time.sleep(0.1)
            yield url
        finally:
            process.terminate()
            process.wait(10)


@dataclass(frozen=True)
class Setup:
    deputy: RunningDeputy
    verified_url: str  # the verifying upstream; also its audience (the default upstream_audience)
    recorder: RequestRecorder


@pytest.fixture(scope="module")
def setup(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    directory: Path = tmp_path_factory.mktemp(f"deputy-chain-{backend}")
    secret = directory / "upstream-key"
    secret.write_text(STATIC_VALUE + "\n")
    verified_port = free_port()
    verified_url = f"http://127.0.0.1:{verified_port}/mcp"
    with recording_upstream() as (recorded_url, recorder):
        extra = f'''
[servers.verified]
title = "Verifies Deputy's tokens"
url = "{verified_url}"
scopes = ["verified:tools"]
credentials = "exchange"

[servers.keyed]
url = "{recorded_url}"
scopes = ["keyed:tools"]
credentials = "static"
headers = {{ X-Upstream-Key = {{ file = "{secret}" }} }}

[servers.plain]
url = "{recorded_url}"
scopes = ["plain:tools"]
credentials = "none"

[servers.minted]
url = "{recorded_url}"
scopes = ["minted:tools"]
credentials = "exchange"
upstream_audience = "{RECORDED_AUDIENCE}"
'''
        with (delegation_deputy(backend, recorded_url, directory, extra=extra) as deputy,
              verifying_upstream(verified_port, deputy.url, directory / "verified-upstream.log")):
            yield Setup(deputy, verified_url, recorder)


def _pre_registered_public_client() -> InMemoryTokenStorage:
    """SDK token storage that already knows the public test client, the one the may_act rules name."""
    storage = InMemoryTokenStorage()
    storage.client_info = OAuthClientInformationFull(
        client_id=PUBLIC_CLIENT, redirect_uris=[REDIRECT_URI],  # type: ignore[list-item]
        token_endpoint_auth_method="none")
    return storage


async def _whoami(url: str, token: str) -> dict[str, Any]:
    """``whoami`` through `url` with the SDK client, presenting `token` as a static bearer token."""
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30.0) as http,
        Client(streamable_http_client(url, http_client=http), mode="legacy") as client,
    ):
        result = await client.call_tool("whoami", {})
    assert not result.is_error, result
    assert isinstance(result.structured_content, dict)
    return result.structured_content


def _actor(sub: str, issuer: str, client_id: str | None = None, inner: dict[str, Any] | None = None) -> dict[str, Any]:
    actor: dict[str, Any] = {"sub": sub, "iss": issuer}
    if client_id is not None:
        actor["client_id"] = client_id
    if inner is not None:
        actor["act"] = inner
    return actor


async def test_a_chain_of_two_agents_reaches_the_upstream_whole(setup: Setup) -> None:
    deputy, resource = setup.deputy, setup.deputy.resource("verified")
    gateway = _actor(resource, deputy.url)

    # Alice authorizes the public client through the SDK's own OAuth flow, and calls whoami herself.
    async with sdk_oauth_client(resource, "alice", PASSWORD, storage=_pre_registered_public_client()) as (
            client, run):
        own = await client.call_tool("whoami", {})
    assert not own.is_error, own
    assert run.storage.tokens is not None
    alice_token = run.storage.tokens.access_token
    alice = claims_of(alice_token)["sub"]  # her user id at Deputy
    assert own.structured_content is not None
    assert own.structured_content["sub"] == alice
    assert own.structured_content["client_id"] == PUBLIC_CLIENT
    assert own.structured_content["act"] == gateway, "no delegation: the gateway is the only actor"

    a_own = await agent_own_token(deputy, AGENT_A, resource=resource)
    by_a = await exchange_token(deputy, AGENT_A, alice_token, a_own)
    assert by_a.status_code == 200, by_a.text
    a_token = by_a.json()["access_token"]
    b_own = await agent_own_token(deputy, AGENT_B, resource=resource)
    by_b = await exchange_token(deputy, AGENT_B, a_token, b_own)
    assert by_b.status_code == 200, by_b.text
    b_token = by_b.json()["access_token"]
    b_claims = claims_of(b_token)
    assert b_claims["txn"] == claims_of(a_token)["txn"]

    seen = await _whoami(resource, b_token)
    assert b_claims["sub"] == alice
    assert seen["iss"] == deputy.url
    assert seen["sub"] == alice
    assert seen["client_id"] == AGENT_B
    assert seen["aud"] == setup.verified_url
    assert seen["act"] == _actor(resource, deputy.url, inner=_actor(
        AGENT_B, deputy.url, AGENT_B, inner=_actor(AGENT_A, deputy.url, AGENT_A))), "gateway → agent-b → agent-a"
    assert seen["txn"] == b_claims["txn"]
    assert seen["scope"] == "verified:tools"
    # What the upstream verified is Deputy's token for it, not the client's.
    assert seen["jti"] != b_claims["jti"]
    assert b_claims["aud"] == resource
    assert seen["exp"] <= b_claims["exp"]
    assert seen["exp"] - seen["iat"] <= 60

    again = await _whoami(resource, b_token)
    assert again["jti"] == seen["jti"], "one upstream token per client token, reused across calls"
    as_a = await _whoami(resource, a_token)
    assert as_a["jti"] != seen["jti"]
    assert as_a["client_id"] == AGENT_A
    assert as_a["act"] == _actor(resource, deputy.url, inner=_actor(AGENT_A, deputy.url, AGENT_A))


async def test_the_upstream_refuses_a_token_deputy_issued_for_itself(setup: Setup) -> None:
    """Audience binding: the client's token names Deputy's resource, so the upstream answers 401."""
    deputy = setup.deputy
    token, _ = await tokens_for_alice(deputy, deputy.resource("verified"))
    assert claims_of(token)["aud"] == deputy.resource("verified")
    body = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}}
    headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    async with httpx.AsyncClient(timeout=30) as http:
        direct = await http.post(setup.verified_url, json=body, headers={**headers, "Authorization": f"Bearer {token}"})
        anonymous = await http.post(setup.verified_url, json=body, headers=headers)
    assert direct.status_code == 401, direct.text
    assert anonymous.status_code == 401, anonymous.text
    through = await mcp_post(deputy, token, server="verified", body=body)
    assert through.status_code == 200, "the same call through Deputy carries a token the upstream accepts"


async def test_static_credentials_come_from_the_secret_file(setup: Setup) -> None:
    deputy = setup.deputy
    token, _ = await tokens_for_alice(deputy, deputy.resource("keyed"))
    setup.recorder.seen.clear()
    response = await mcp_post(deputy, token, server="keyed", headers={"X-Upstream-Key": "forged-by-the-client"})
    assert response.status_code == 200, response.text
    (seen,) = [request.headers for request in setup.recorder.seen]
    assert seen["x-upstream-key"] == STATIC_VALUE, "the configured header, not the client's"
    assert "authorization" not in seen


async def test_no_credentials_send_no_authorization(setup: Setup) -> None:
    deputy = setup.deputy
    token, _ = await tokens_for_alice(deputy, deputy.resource("plain"))
    setup.recorder.seen.clear()
    response = await mcp_post(deputy, token, server="plain")
    assert response.status_code == 200, response.text
    (seen,) = [request.headers for request in setup.recorder.seen]
    assert "authorization" not in seen
    assert token not in " ".join(seen.values()), "the client's token is never forwarded"


async def test_exchange_credentials_use_the_configured_upstream_audience(setup: Setup) -> None:
    deputy = setup.deputy
    token, _ = await tokens_for_alice(deputy, deputy.resource("minted"))
    setup.recorder.seen.clear()
    response = await mcp_post(deputy, token, server="minted")
    assert response.status_code == 200, response.text
    (seen,) = [request.headers for request in setup.recorder.seen]
    scheme, _, upstream_token = seen["authorization"].partition(" ")
    assert scheme == "Bearer"
    assert upstream_token != token
    async with httpx.AsyncClient(timeout=30) as http:
        keys = KeySet.import_key_set((await http.get(f"{deputy.url}/.well-known/jwks.json")).json())
    decoded = jwt.decode(upstream_token, keys, algorithms=["ES256"])
    client = claims_of(token)
    assert decoded.header["typ"] == "at+jwt"
    assert decoded.claims["aud"] == RECORDED_AUDIENCE
    assert decoded.claims["iss"] == deputy.url
    assert decoded.claims["sub"] == client["sub"]
    assert decoded.claims["client_id"] == PUBLIC_CLIENT
    assert decoded.claims["act"] == _actor(deputy.resource("minted"), deputy.url)
    assert decoded.claims["scope"] == client["scope"]
    assert "sid" not in decoded.claims and "may_act" not in decoded.claims
