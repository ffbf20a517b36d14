"""The gateway as protected resource: bearer token checks (RFC 6750, RFC 9068 §4, RFC 9728 §5.1; MCP RS-2..RS-9).

Tampered tokens are made from real ones: a token minted with Deputy's own KeyRing (read
from the fixture's data_dir) and `mint_access_token`, then one header field or claim
changed and re-signed with the real key, so each test isolates the one check it names.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey

from deputy.keys import KeyRing
from deputy.oauth.access_tokens import mint_access_token
from tests.security.helpers import assert_invalid_token, bearer_challenge, metadata_url
from tests.support.deputy_process import PUBLIC_CLIENT, RunningDeputy
from tests.support.oauth_flow import mcp_post, tokens_for_alice


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64json(value: Any) -> str:
    return b64url(json.dumps(value, separators=(",", ":")).encode())


def split(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    header, payload, signature = token.split(".")
    return json.loads(b64decode(header)), json.loads(b64decode(payload)), signature


def b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


@pytest.fixture(scope="module")
def keyring(deputy: RunningDeputy) -> KeyRing:
    return KeyRing.open(deputy.data_dir / "keys", 600)


Edit = Callable[[dict[str, Any], dict[str, Any]], None]


def mint(deputy: RunningDeputy, keyring: KeyRing, edit: Edit | None = None, *, scope: str = "demo:tools",
         key: ECKey | None = None) -> str:
    """A token exactly as Deputy mints it, then `edit(header, claims)` and re-signed (by `key`, default Deputy's)."""
    token, claims = mint_access_token(keyring, issuer=deputy.url, subject="forged-user", client_id=PUBLIC_CLIENT,
                                      audience=deputy.resource("demo"), scope=scope, ttl=600, grant_id=None,
                                      auth_time=None)
    if edit is None and key is None:
        return token
    header, _claims, _signature = split(token)
    if edit is not None:
        edit(header, claims)
    return jwt.encode(header, claims, key or keyring.signing_key, algorithms=["ES256"])


def setting(where: str, name: str, value: Any) -> Edit:
    def edit(header: dict[str, Any], claims: dict[str, Any]) -> None:
        (header if where == "header" else claims)[name] = value
    return edit


def removing(name: str) -> Edit:
    def edit(_header: dict[str, Any], claims: dict[str, Any]) -> None:
        del claims[name]
    return edit


def assert_refused_without_error(deputy: RunningDeputy, response: httpx.Response) -> None:
    """RFC 6750 §3.1: no credentials → 401 and a challenge with no error code."""
    assert response.status_code == 401, response.text
    params = bearer_challenge(response)
    assert "error" not in params
    assert params == {"resource_metadata": metadata_url(deputy), "scope": "demo:tools"}


async def test_no_token_gets_challenge_with_metadata_and_scope(deputy: RunningDeputy) -> None:
    """MCP RS-2, RS-3 / RFC 9728 §5.1: no token → 401, WWW-Authenticate with resource_metadata and scope, no error."""
    response = await mcp_post(deputy)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == (
        f'Bearer resource_metadata="{metadata_url(deputy)}", scope="demo:tools"')
    assert_refused_without_error(deputy, response)


async def test_untampered_reminted_token_is_accepted(deputy: RunningDeputy, keyring: KeyRing) -> None:
    """Control for the forgeries below: a token minted the way Deputy mints is accepted (200)."""
    assert (await mcp_post(deputy, mint(deputy, keyring))).status_code == 200
    same = mint(deputy, keyring, lambda header, claims: None)  # decoded and re-signed, unchanged
    assert (await mcp_post(deputy, same)).status_code == 200


async def test_token_for_another_server_is_invalid_token(deputy: RunningDeputy, browser: httpx.AsyncClient) -> None:
    """MCP RS-5 / RFC 8707: a token issued for /mcp/other is refused by /mcp/demo → 401 error=invalid_token."""
    access, _refresh = await tokens_for_alice(deputy, deputy.resource("other"), browser=browser)
    assert (await mcp_post(deputy, access, server="other")).status_code == 200
    assert_invalid_token(deputy, await mcp_post(deputy, access, server="demo"))


def _expired(_header: dict[str, Any], claims: dict[str, Any]) -> None:
    now = int(time.time())
    claims["iat"], claims["exp"] = now - 700, now - 60


def _future_iat(_header: dict[str, Any], claims: dict[str, Any]) -> None:
    now = int(time.time())
    claims["iat"], claims["exp"] = now + 300, now + 900


FORGERIES: dict[str, Edit] = {
    "expired": _expired,
    "typ JWT": setting("header", "typ", "JWT"),
    "typ missing": lambda header, claims: header.pop("typ"),
    "wrong iss": setting("claims", "iss", "http://attacker.example"),
    "iss with trailing slash": lambda header, claims: claims.update(iss=claims["iss"] + "/"),
    "wrong aud": setting("claims", "aud", "http://attacker.example/mcp/demo"),
    "aud of other server": lambda header, claims: claims.update(aud=claims["aud"].replace("/demo", "/other")),
    "aud list of two": lambda header, claims: claims.update(aud=[claims["aud"], claims["aud"][:-4] + "other"]),
    "missing exp": removing("exp"),
    "missing iat": removing("iat"),
    "future nbf": lambda header, claims: claims.update(nbf=int(time.time()) + 300),
    "future iat": _future_iat,
    "missing jti": removing("jti"),
    "missing sub": removing("sub"),
    "missing client_id": removing("client_id"),
    "string exp": lambda header, claims: claims.update(exp=str(claims["exp"])),
}


@pytest.mark.parametrize("case", list(FORGERIES))
async def test_tampered_claims_resigned_with_the_real_key_are_invalid_token(
        deputy: RunningDeputy, keyring: KeyRing, case: str) -> None:
    """MCP RS-5 / RFC 9068 §4 / OAuth 2.1 §5.2: typ, iss, aud (exactly one), exp, iat, nbf, jti checked → 401."""
    assert_invalid_token(deputy, await mcp_post(deputy, mint(deputy, keyring, FORGERIES[case])))


async def test_flipped_signature_byte_is_invalid_token(deputy: RunningDeputy, keyring: KeyRing) -> None:
    """MCP RS-5 / RFC 9068 §4: a token whose signature was altered → 401 invalid_token."""
    header, payload, signature = mint(deputy, keyring).split(".")
    raw = bytearray(b64decode(signature))
    raw[10] ^= 0x01
    assert_invalid_token(deputy, await mcp_post(deputy, f"{header}.{payload}.{b64url(bytes(raw))}"))


async def test_flipped_payload_byte_is_invalid_token(deputy: RunningDeputy, keyring: KeyRing) -> None:
    """MCP RS-5: claims changed after signing (scope widened) without re-signing → 401 invalid_token."""
    header, _payload, signature = mint(deputy, keyring).split(".")
    _h, claims, _s = split(mint(deputy, keyring))
    claims["scope"] = "demo:tools demo:admin"
    assert_invalid_token(deputy, await mcp_post(deputy, f"{header}.{b64json(claims)}.{signature}"))


@pytest.mark.parametrize("signature", ["", "AAAA"])
async def test_alg_none_is_invalid_token(deputy: RunningDeputy, keyring: KeyRing, signature: str) -> None:
    """MCP RS-5 / RFC 8725 §3.1: `alg: none` (unsigned) → 401 invalid_token."""
    header, claims, _s = split(mint(deputy, keyring))
    header["alg"] = "none"
    assert_invalid_token(deputy, await mcp_post(deputy, f"{b64json(header)}.{b64json(claims)}.{signature}"))


@pytest.mark.parametrize("secret_kind", ["jwks", "jwk", "pem"])
async def test_hs256_signed_with_the_public_key_is_invalid_token(
        deputy: RunningDeputy, keyring: KeyRing, secret_kind: str) -> None:
    """MCP RS-5 / RFC 8725 §2.1 (algorithm confusion): HS256 with the public key as HMAC secret → 401."""
    async with httpx.AsyncClient() as http:
        jwks = (await http.get(f"{deputy.url}/.well-known/jwks.json")).text
    public = keyring.signing_key
    secret = {
        "jwks": jwks.encode(),
        "jwk": json.dumps(public.as_dict(private=False)).encode(),
        "pem": public.as_pem(private=False),
    }[secret_kind]
    header, claims, _s = split(mint(deputy, keyring))
    header["alg"] = "HS256"
    signing_input = f"{b64json(header)}.{b64json(claims)}"
    signature = b64url(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())
    assert_invalid_token(deputy, await mcp_post(deputy, f"{signing_input}.{signature}"))


@pytest.mark.parametrize("kid", ["same", "unknown", "absent"])
async def test_token_signed_by_an_unknown_key_is_invalid_token(
        deputy: RunningDeputy, keyring: KeyRing, kid: str) -> None:
    """MCP RS-5 / RFC 9068 §4: valid ES256 signature by a key Deputy does not publish → 401 invalid_token."""
    stranger = ECKey.generate_key("P-256", private=True)

    def edit(header: dict[str, Any], _claims: dict[str, Any]) -> None:
        if kid == "unknown":
            header["kid"] = "attacker-key"
        elif kid == "absent":
            del header["kid"]

    assert_invalid_token(deputy, await mcp_post(deputy, mint(deputy, keyring, edit, key=stranger)))


async def test_token_with_wrong_typ_signed_by_unknown_key_is_invalid_token(
        deputy: RunningDeputy, keyring: KeyRing) -> None:
    """MCP RS-5 / RFC 9068 §2.1: a plain JWT (`typ: JWT`) by an unknown key → 401 invalid_token."""
    token = mint(deputy, keyring, setting("header", "typ", "JWT"), key=ECKey.generate_key("P-256", private=True))
    assert_invalid_token(deputy, await mcp_post(deputy, token))


async def test_token_in_query_string_is_refused(deputy: RunningDeputy, keyring: KeyRing) -> None:
    """MCP RS-9 / RFC 6750 §2.3 not supported: ?access_token= → 400 invalid_request, even with a valid header."""
    token = mint(deputy, keyring)
    only_query = await mcp_post(deputy, query=f"access_token={token}")
    assert only_query.status_code == 400
    assert bearer_challenge(only_query)["error"] == "invalid_request"
    assert only_query.json()["error"] == "invalid_request"
    both = await mcp_post(deputy, token, query=f"access_token={token}")
    assert both.status_code == 400
    assert bearer_challenge(both)["error"] == "invalid_request"


async def test_token_without_required_scope_is_insufficient_scope(
        deputy: RunningDeputy, browser: httpx.AsyncClient) -> None:
    """MCP RS-7, RS-8: a token with only demo:admin → 403 error="insufficient_scope", scope="demo:tools", metadata."""
    access, _refresh = await tokens_for_alice(deputy, browser=browser, scope="demo:admin")
    response = await mcp_post(deputy, access)
    assert response.status_code == 403
    assert bearer_challenge(response) == {
        "error": "insufficient_scope",
        "resource_metadata": metadata_url(deputy),
        "scope": "demo:tools",
    }
    assert response.json()["error"] == "insufficient_scope"


@pytest.mark.parametrize("scheme", ["Basic", "Token", "DPoP", "MAC", "Bearer-x"])
async def test_non_bearer_scheme_is_unauthorized(deputy: RunningDeputy, keyring: KeyRing, scheme: str) -> None:
    """MCP RS-5 / RFC 6750 §2.1: only `Authorization: Bearer` carries the token; any other scheme → 401."""
    token = mint(deputy, keyring)
    value = f"{scheme} {base64.b64encode(b'alice:pw').decode()}" if scheme == "Basic" else f"{scheme} {token}"
    response = await mcp_post(deputy, headers={"Authorization": value})
    assert_refused_without_error(deputy, response)


@pytest.mark.parametrize("value", ["Bearer", "Bearer a b"])
async def test_malformed_bearer_header_is_refused(deputy: RunningDeputy, value: str) -> None:
    """RFC 6750 §3.1: a Bearer header without exactly one token → 400 invalid_request (never accepted)."""
    response = await mcp_post(deputy, headers={"Authorization": value})
    assert response.status_code == 400
    assert bearer_challenge(response)["error"] == "invalid_request"
