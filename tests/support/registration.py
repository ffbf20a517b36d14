"""Dynamic client registration against a real Deputy: its policies, and the requests (RFC 7591, RFC 7592).

`registration_deputy` runs `deputy serve` with a given ``[registration]`` table;
`allowlist_deputy` is the `allowlist` policy the security tests share: one allowed
redirect host (and ``localhost``), one initial access token, one trusted publisher of
software statements whose key is `PUBLISHER_KEY`. `register`, `manage` and
`statement` post or sign exactly what they are told.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import httpx
from joserfc import jwt
from joserfc.jwk import ECKey

from tests.support.databases import database_url
from tests.support.deputy_process import RunningDeputy, running_deputy

PUBLISHER: Final = "https://publisher.example"
INITIAL_TOKEN: Final = "initial-access-token-for-tests-0123456789"
ALLOWED_HOST: Final = "app.example.com"
VOUCHED: Final = "https://vouched.example/cb"  # a redirect URI only a software statement admits
PUBLISHER_KEY: Final = ECKey.generate_key("P-256", parameters={"kid": "publisher-1"}, private=True)
STRANGER_KEY: Final = ECKey.generate_key("P-256", parameters={"kid": "publisher-1"}, private=True)


@contextmanager
def registration_deputy(backend: str, upstream_url: str, directory: Path, table: str) -> Iterator[RunningDeputy]:
    """A running Deputy with `table` as its ``[registration]`` configuration, on a fresh database."""
    (directory / "publisher.json").write_text(json.dumps({"keys": [PUBLISHER_KEY.as_dict(private=False)]}))
    extra = f"\n[registration]\n{table}\n"
    with database_url(backend, directory) as url, running_deputy(directory, url, upstream_url, extra) as running:
        yield running


@contextmanager
def allowlist_deputy(backend: str, upstream_url: str, directory: Path) -> Iterator[RunningDeputy]:
    """`allowlist`: `ALLOWED_HOST` and localhost, `INITIAL_TOKEN`, and `PUBLISHER` trusted for statements."""
    table = f'''mode = "allowlist"
allowed_redirect_hosts = ["{ALLOWED_HOST}", "localhost"]
initial_access_tokens = ["{INITIAL_TOKEN}"]
rate_limit_per_minute = 10000

[[registration.trusted_publishers]]
issuer = "{PUBLISHER}"
jwks_file = "{directory / 'publisher.json'}"'''
    with registration_deputy(backend, upstream_url, directory, table) as running:
        yield running


async def register(deputy: RunningDeputy, metadata: dict[str, Any], token: str | None = None) -> httpx.Response:
    """``POST /register`` of a public client with `metadata` (and `token` as the initial access token)."""
    body = {"client_name": "Policy test", "token_endpoint_auth_method": "none", **metadata}
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(f"{deputy.url}/register", json=body, headers=headers)


async def manage(method: str, url: str, token: str | None, body: dict[str, Any] | None = None) -> httpx.Response:
    """`method` on a client configuration endpoint with `token` as the registration access token (RFC 7592 §2)."""
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.request(method, url, json=body, headers=headers)


async def registered(deputy: RunningDeputy, uris: list[str] | None = None, **metadata: Any) -> dict[str, Any]:
    """A client registered with `uris` (by default one on `ALLOWED_HOST`); the registration response."""
    response = await register(deputy, {"redirect_uris": uris or [f"https://{ALLOWED_HOST}/cb"], **metadata})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    assert body["registration_client_uri"] == f"{deputy.url}/register/{body['client_id']}"
    return body


def statement(claims: dict[str, Any], key: ECKey = PUBLISHER_KEY, issuer: str = PUBLISHER) -> str:
    """A software statement (RFC 7591 §2.3) of `claims`, signed with `key`, valid for five minutes."""
    t = int(time.time())
    payload = {"iss": issuer, "iat": t, "exp": t + 300, **claims}
    return jwt.encode({"alg": "ES256", "kid": "publisher-1"}, payload, key)
