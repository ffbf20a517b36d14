"""The authorization code flow against a running Deputy, by hand, with every parameter under control.

`authorize` builds the authorization URL from keyword arguments (pass `OMIT` to leave a
parameter out, `extra` to add or repeat one), walks login and consent with `FormDriver` in a
cookie-keeping `httpx.AsyncClient`, and returns either the redirect back to the client or the
page Deputy stopped on. `exchange` and `refresh` post to `/token` exactly as told.
`tokens_for_alice` is the happy path in one call.

Security tests use these to send what a careless or hostile client would send.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import quote, urlencode

import httpx

from tests.support.deputy_process import PASSWORD, PUBLIC_CLIENT, REDIRECT_URI, RunningDeputy
from tests.support.sdk_client import AuthorizationRedirect, FormDriver, FormDriverError, parse_redirect

__all__ = [
    "OMIT",
    "Authorization",
    "Pkce",
    "authorize",
    "exchange",
    "mcp_post",
    "refresh",
    "tokens_for_alice",
]


class _Omit:
    def __repr__(self) -> str:
        return "OMIT"


OMIT: Final = _Omit()
"""Leave the parameter out of the request entirely."""

DEFAULT: Final[Any] = object()  # "what the flow would send": a sentinel any parameter may default to

Param = str | _Omit


@dataclass(frozen=True)
class Pkce:
    verifier: str
    challenge: str

    @classmethod
    def new(cls) -> Pkce:
        verifier = secrets.token_urlsafe(48)  # 64 characters of the unreserved set
        digest = hashlib.sha256(verifier.encode("ascii")).digest()
        return cls(verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii"))


@dataclass
class Authorization:
    """Where one authorization request ended.

    Exactly one of `redirect` (the redirect to `redirect_uri`, with code or error) and
    `page` (the response Deputy stopped on: an error page, or a form the driver would not
    answer) is set. `verifier` and `state` are what this request used.
    """

    url: str
    verifier: str | None
    state: str | None
    redirect: AuthorizationRedirect | None = None
    page: httpx.Response | None = None
    history: list[httpx.Response] = field(default_factory=list)

    @property
    def code(self) -> str:
        assert self.redirect is not None, f"no redirect; stopped on HTTP {self.page and self.page.status_code}"
        code = self.redirect.code
        assert code, f"redirect without a code: {self.redirect.url}"
        return code


def _add(params: list[tuple[str, str]], name: str, value: Param) -> None:
    if not isinstance(value, _Omit):
        params.append((name, value))


async def authorize(
    deputy: RunningDeputy,
    *,
    client_id: Param = PUBLIC_CLIENT,
    redirect_uri: Param = DEFAULT,
    resource: Any = DEFAULT,
    scope: Param = OMIT,
    response_type: Param = "code",
    pkce: Pkce | None = None,
    challenge: Any = DEFAULT,
    method: Param = "S256",
    state: Any = DEFAULT,
    extra: Sequence[tuple[str, str]] = (),
    decision: str = "approve",
    username: str = "alice",
    password: str = PASSWORD,
    browser: httpx.AsyncClient | None = None,
) -> Authorization:
    """Send one authorization request and walk login/consent until Deputy redirects or stops.

    Defaults: the public test client, its registered redirect URI, resource ``/mcp/demo``,
    no scope (Deputy then grants the server's required scopes), a fresh S256 PKCE pair and a
    random state. `browser` keeps cookies across calls (a signed-in user); by default each call
    uses a new browser that must sign in.
    """
    pkce = pkce or Pkce.new()
    if redirect_uri is DEFAULT:
        redirect_uri = deputy.redirect_uri
    if challenge is DEFAULT:
        challenge = pkce.challenge
    if resource is DEFAULT:
        resource = deputy.resource("demo")
    if state is DEFAULT:
        state = secrets.token_urlsafe(16)
    params: list[tuple[str, str]] = []
    _add(params, "response_type", response_type)
    _add(params, "client_id", client_id)
    _add(params, "redirect_uri", redirect_uri)
    _add(params, "scope", scope)
    _add(params, "state", state)
    _add(params, "code_challenge", challenge)
    _add(params, "code_challenge_method", method)
    _add(params, "resource", resource)
    params.extend(extra)
    url = f"{deputy.url}/authorize?{urlencode(params, quote_via=quote)}"
    # Stop at anything that leaves for the redirect URI the request named, even an unregistered
    # one: a redirect there is exactly what a test must see rather than follow.
    prefix = redirect_uri if isinstance(redirect_uri, str) else REDIRECT_URI
    result = Authorization(url=url, verifier=pkce.verifier, state=state if isinstance(state, str) else None)
    driver = FormDriver(browser, username, password, decision)
    try:
        final = await driver.authorize(url, prefix)
    except FormDriverError as exc:
        if exc.response is None:
            raise
        result.page = exc.response
    else:
        result.redirect = parse_redirect(final)
    result.history = list(driver.history)
    return result


def _basic(client_id: str, secret: str) -> str:
    raw = f"{quote(client_id, safe='')}:{quote(secret, safe='')}".encode()
    return "Basic " + base64.b64encode(raw).decode("ascii")


async def post_token(
    deputy: RunningDeputy,
    data: Sequence[tuple[str, str]],
    *,
    basic: tuple[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """POST form `data` (a list, so parameters may repeat) to ``/token``."""
    sent = {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})}
    if basic is not None:
        sent["Authorization"] = _basic(*basic)
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(f"{deputy.url}/token", content=urlencode(list(data)), headers=sent)


async def exchange(
    deputy: RunningDeputy,
    code: Param,
    *,
    verifier: Param,
    client_id: Param = PUBLIC_CLIENT,
    redirect_uri: Param = DEFAULT,
    resource: Any = DEFAULT,
    basic: tuple[str, str] | None = None,
    extra: Sequence[tuple[str, str]] = (),
) -> httpx.Response:
    """The authorization code grant (OAuth 2.1 §4.1.3); `basic` = (client_id, secret).

    With `basic`, `client_id` is left out of the body unless passed explicitly.
    """
    if resource is DEFAULT:
        resource = deputy.resource("demo")
    if redirect_uri is DEFAULT:
        redirect_uri = deputy.redirect_uri
    if basic is not None and client_id == PUBLIC_CLIENT:
        client_id = OMIT
    data: list[tuple[str, str]] = [("grant_type", "authorization_code")]
    _add(data, "code", code)
    _add(data, "code_verifier", verifier)
    _add(data, "client_id", client_id)
    _add(data, "redirect_uri", redirect_uri)
    _add(data, "resource", resource)
    data.extend(extra)
    return await post_token(deputy, data, basic=basic)


async def refresh(
    deputy: RunningDeputy,
    refresh_token: str,
    *,
    client_id: Param = PUBLIC_CLIENT,
    scope: Param = OMIT,
    resource: Param = OMIT,
    basic: tuple[str, str] | None = None,
) -> httpx.Response:
    """The refresh token grant (OAuth 2.1 §4.3)."""
    if basic is not None and client_id == PUBLIC_CLIENT:
        client_id = OMIT
    data: list[tuple[str, str]] = [("grant_type", "refresh_token"), ("refresh_token", refresh_token)]
    _add(data, "client_id", client_id)
    _add(data, "scope", scope)
    _add(data, "resource", resource)
    return await post_token(deputy, data, basic=basic)


async def tokens_for_alice(
    deputy: RunningDeputy,
    resource: str | None = None,
    *,
    scope: Param = OMIT,
    client_id: str = PUBLIC_CLIENT,
    basic: tuple[str, str] | None = None,
    username: str = "alice",
    password: str = PASSWORD,
    browser: httpx.AsyncClient | None = None,
) -> tuple[str, str]:
    """(access_token, refresh_token) through the whole flow, asserting every step succeeds.

    `browser` is a cookie-keeping client that may already be signed in (as `username`).
    """
    resource = resource or deputy.resource("demo")
    auth = await authorize(deputy, client_id=client_id, resource=resource, scope=scope, username=username,
                           password=password, browser=browser)
    assert auth.redirect is not None and auth.redirect.error is None, (
        f"authorization failed: {auth.redirect.url if auth.redirect else auth.page and auth.page.text[:500]}")
    response = await exchange(deputy, auth.code, verifier=auth.verifier or "", client_id=client_id,
                              resource=resource, basic=basic)
    assert response.status_code == 200, response.text
    body = response.json()
    return body["access_token"], body["refresh_token"]


INITIALIZE: Final = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "deputy-security-tests", "version": "0"},
    },
}


async def mcp_post(
    deputy: RunningDeputy,
    token: str | None = None,
    *,
    server: str = "demo",
    body: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
    query: str = "",
) -> httpx.Response:
    """One raw JSON-RPC POST through the gateway (``initialize`` unless `body` says otherwise)."""
    sent = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"
    sent.update(headers or {})
    url = f"{deputy.resource(server)}{'?' + query if query else ''}"
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(url, json=body if body is not None else INITIALIZE, headers=sent)
