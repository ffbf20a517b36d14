"""Small checks shared by the security tests."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable

import httpx

from tests.support.deputy_process import RunningDeputy

# Revocations reach the gateway by a ~1 s poll of the database; wait at most this long.
REVOCATION_WAIT = 5.0

_PARAM = re.compile(r'\s*([A-Za-z_][A-Za-z0-9_]*)="((?:[^"\\]|\\.)*)"\s*(?:,|$)')


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """Split ``Bearer a="b", c="d"`` into ("Bearer", {"a": "b", "c": "d"}); strict on syntax."""
    scheme, _, rest = header.partition(" ")
    params: dict[str, str] = {}
    position = 0
    rest = rest.strip()
    while position < len(rest):
        match = _PARAM.match(rest, position)
        assert match is not None, f"malformed challenge at {rest[position:]!r} in {header!r}"
        assert match.group(1) not in params, f"repeated {match.group(1)} in {header!r}"
        params[match.group(1)] = match.group(2)
        position = match.end()
    return scheme, params


def metadata_url(deputy: RunningDeputy, server: str = "demo") -> str:
    return f"{deputy.url}/.well-known/oauth-protected-resource/mcp/{server}"


def bearer_challenge(response: httpx.Response) -> dict[str, str]:
    header = response.headers.get("www-authenticate")
    assert header is not None, f"HTTP {response.status_code} without WWW-Authenticate"
    scheme, params = parse_challenge(header)
    assert scheme == "Bearer", header
    return params


def assert_invalid_token(deputy: RunningDeputy, response: httpx.Response, server: str = "demo") -> None:
    """RFC 6750 §3.1: 401 with error="invalid_token", plus the discovery hints (RFC 9728 §5.1)."""
    assert response.status_code == 401, response.text
    params = bearer_challenge(response)
    assert params["error"] == "invalid_token"
    assert params["resource_metadata"] == metadata_url(deputy, server)
    assert response.json()["error"] == "invalid_token"


async def wait_for_status(call: Callable[[], Awaitable[httpx.Response]], status: int,
                          within: float = REVOCATION_WAIT) -> httpx.Response:
    """Repeat `call` until it answers `status` or `within` seconds pass; returns the last response."""
    deadline = time.monotonic() + within
    while True:
        response = await call()
        if response.status_code == status or time.monotonic() >= deadline:
            return response
        await asyncio.sleep(0.2)


def oauth_error(response: httpx.Response) -> str:
    assert response.headers.get("content-type", "").startswith("application/json"), response.text[:300]
    error: str = response.json()["error"]
    return error
