"""An OAuth-protected upstream MCP server and its authorization server on one loopback origin, scripted by the test.

:class:`UpstreamSite` answers, on ``http://127.0.0.1:PORT``:

- ``POST /mcp``: ``401`` with :attr:`UpstreamSite.challenge` as ``WWW-Authenticate``;
- ``/.well-known/oauth-protected-resource/mcp``: :attr:`UpstreamSite.prm` (404 when None);
- ``/.well-known/oauth-authorization-server``: :attr:`UpstreamSite.metadata` (404 when None);
- ``POST /token``, ``POST /register``, ``POST /revoke``: recorded (:attr:`UpstreamSite.seen`) and answered with
  :attr:`UpstreamSite.token_answer` (a fresh token by default), a registration echoing the asked method, ``200``;
- any path in :attr:`UpstreamSite.answers`: exactly that answer (any status, headers, body), or a hang until the
  test ends (:data:`HANG`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from deputy.config import UpstreamServer
from deputy.config_connections import UpstreamOAuth
from tests.support.local_http import serving


@dataclass(frozen=True)
class Answer:
    status: int = 200
    body: bytes | Mapping[str, Any] | list[Any] = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    media_type: str = "application/json"

    def response(self) -> Response:
        body = self.body if isinstance(self.body, bytes) else json.dumps(self.body).encode()
        return Response(body, self.status, headers=dict(self.headers), media_type=self.media_type)


HANG = Answer(status=-1)  # the request is held until the test ends


@dataclass(frozen=True)
class Seen:
    method: str
    path: str
    headers: Mapping[str, str]
    form: Mapping[str, str]
    document: Any


class UpstreamSite:
    def __init__(self) -> None:
        self.port = 0
        self.prm: dict[str, Any] | None = None
        self.metadata: dict[str, Any] | None = None
        self.challenge: str | None = None
        self.initialize_allowed = False  # initialize answered 200; other methods still 401
        self.answers: dict[str, Answer] = {}
        self.token_answer: Answer | None = None
        self.seen: list[Seen] = []
        self.released = asyncio.Event()
        self.tokens_issued = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def mcp_url(self) -> str:
        return f"{self.base}/mcp"

    def reset(self) -> None:
        base = self.base
        self.prm = {"resource": self.mcp_url, "authorization_servers": [base], "scopes_supported": ["mcp:read"]}
        self.metadata = {
            "issuer": base, "authorization_endpoint": f"{base}/authorize", "token_endpoint": f"{base}/token",
            "registration_endpoint": f"{base}/register", "revocation_endpoint": f"{base}/revoke",
            "response_types_supported": ["code"], "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
            "authorization_response_iss_parameter_supported": True,
        }
        self.challenge = f'Bearer resource_metadata="{base}/.well-known/oauth-protected-resource/mcp"'

    def requests(self, path: str) -> list[Seen]:
        return [seen for seen in self.seen if seen.path == path]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        body = await request.body()
        path = request.url.path
        form = dict(parse_qsl(body.decode("latin-1"))) if "form-urlencoded" in request.headers.get(
            "content-type", "") else {}
        try:
            document = json.loads(body) if body and "json" in request.headers.get("content-type", "") else None
        except ValueError:
            document = None
        self.seen.append(Seen(request.method, path, dict(request.headers), form, document))
        response = await self._answer(request.method, path, document)
        await response(scope, receive, send)

    async def _answer(self, method: str, path: str, document: Any) -> Response:
        if path in self.answers:
            answer = self.answers[path]
            if answer is HANG:
                await self.released.wait()
                return Response(b"", 503)
            return answer.response()
        if method == "POST" and path == "/mcp":
            if self.initialize_allowed and isinstance(document, dict) and document.get("method") == "initialize":
                return Answer(body={"jsonrpc": "2.0", "id": document.get("id"), "result": {}}).response()
            headers = {"WWW-Authenticate": self.challenge} if self.challenge else {}
            return Answer(401, {"error": "invalid_token"}, headers).response()
        if path == "/.well-known/oauth-protected-resource/mcp" and self.prm is not None:
            return Answer(body=self.prm).response()
        if path == "/.well-known/oauth-authorization-server" and self.metadata is not None:
            return Answer(body=self.metadata).response()
        if method == "POST" and path == "/token":
            if self.token_answer is not None:
                return self.token_answer.response()
            self.tokens_issued += 1
            return Answer(body={"access_token": f"at-{self.tokens_issued}", "token_type": "Bearer",
                                "expires_in": 3600, "refresh_token": f"rt-{self.tokens_issued}"}).response()
        if method == "POST" and path == "/register":
            asked = document.get("token_endpoint_auth_method") if isinstance(document, dict) else None
            secret = {} if asked == "none" else {"client_secret": "registered-secret"}
            return Answer(201, {"client_id": "registered-client", **secret,
                                "token_endpoint_auth_method": asked}).response()
        if method == "POST" and path == "/revoke":
            return Response(b"", 200)
        return Response(b"not found", 404)


@asynccontextmanager
async def upstream_site() -> AsyncIterator[UpstreamSite]:
    site = UpstreamSite()
    async with serving(site) as port:
        site.port = port
        site.reset()
        try:
            yield site
        finally:
            site.released.set()


def server_for(site: UpstreamSite, name: str = "tracker", **oauth: Any) -> UpstreamServer:
    """The upstream as configured; its loopback host is trusted (http there) unless the test says otherwise."""
    oauth.setdefault("trusted_hosts", frozenset({"127.0.0.1"}))
    return UpstreamServer(name=name, resource=f"https://deputy.example/mcp/{name}", title="Tracker",
                          scopes=("tools:read",), required_scopes=(), url=site.mcp_url, credentials="oauth",
                          oauth=UpstreamOAuth(**oauth))


class Names:
    """A resolver for the SSRF-safe fetcher: each name answers the addresses the test gives it."""

    def __init__(self, names: Mapping[str, list[str]]) -> None:
        self.names = dict(names)

    async def resolve(self, host: str, port: int) -> list[str]:
        if host not in self.names:
            raise OSError(f"{host} is not known in this test")
        return self.names[host]
