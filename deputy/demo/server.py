"""The demo upstream MCP server.

Deputy is an authorization gateway: it needs something to guard. This module builds a
small MCP server with the official SDK's `MCPServer` that offers a mix of harmless and
"dangerous" tools, so that policies have something meaningful to allow or deny:

* ``echo(text)`` and ``add(a, b)``: harmless.
* ``list_users()``: read-only access to a small in-memory user directory.
* ``delete_user(id, reason)``: a destructive write against that directory.
* resource ``demo://readme``, resource template ``demo://users/{id}`` and prompt ``greet(name)``.
* completion (``completion/complete``) of ``greet``'s ``name`` and the template's ``id`` from the user
  directory: what a policy that hides the prompt or template must keep from being completed too.

State (the user directory) lives in the server object returned by
`build_demo_server`, so every build starts from the same fixed list.

Run it with ``python -m deputy.demo`` (Streamable HTTP at ``http://HOST:PORT/mcp``) or
``python -m deputy.demo --stdio``.

With ``--verify-issuer URL`` the server plays an upstream that trusts Deputy's
``exchange`` credentials: every request needs ``Authorization: Bearer`` with an access
token (RFC 9068: ``typ`` at+jwt, ES256 only) signed by a key in
``URL/.well-known/jwks.json``, ``iss`` = URL, ``aud`` = ``--audience`` (default: this
server's own URL) and an ``exp`` still ahead; anything else is answered 401 by the SDK's
bearer middleware (`DeputyTokenVerifier` is its `TokenVerifier`). A further tool,
``whoami()``, returns the verified claims (``sub``, ``client_id``, ``aud``, ``act``,
``txn``, ...) as structured content.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import logging
import time
from collections.abc import Sequence
from typing import Any, Final
from urllib.parse import urlsplit

import httpx2
from joserfc import jws, jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from mcp.server import MCPServer
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.provider import AccessToken
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import Completion, CompletionArgument, CompletionContext, PromptReference, ResourceTemplateReference
from starlette.applications import Starlette

__all__ = ["DEMO_USERS", "README_TEXT", "DeputyTokenVerifier", "build_demo_server", "demo_asgi_app", "main"]

log = logging.getLogger(__name__)

SERVER_NAME: Final = "deputy-demo"

DEMO_USERS: Final[tuple[dict[str, Any], ...]] = (
    {"id": 1, "name": "Ada Lovelace"},
    {"id": 2, "name": "Alan Turing"},
    {"id": 3, "name": "Grace Hopper"},
    {"id": 4, "name": "Edsger Dijkstra"},
)
"""The user directory every demo server starts with."""

README_TEXT: Final = (
    "Deputy demo server\n"
    "==================\n\n"
    "Tools: echo, add, list_users, delete_user.\n"
    "Resource: demo://readme (this text). Prompt: greet(name).\n"
)


# Claims `whoami` reports, when the token carries them.
WHOAMI_CLAIMS: Final = ("iss", "sub", "client_id", "aud", "scope", "act", "txn", "jti", "iat", "exp", "auth_time")
TOKEN_TYPES: Final = frozenset({"at+jwt", "application/at+jwt"})
ALGORITHM: Final = "ES256"


class DeputyTokenVerifier:
    """The SDK's `TokenVerifier` for tokens Deputy minted for this server (RFC 9068 §4).

    Keys come from ``{issuer}/.well-known/jwks.json``, fetched on first use and again
    when a token names a key not seen yet (at most every ``refetch_interval`` seconds,
    so a stream of bogus ``kid`` values cannot turn into a stream of fetches; requests
    arriving during a fetch wait for it).
    """

    def __init__(self, issuer: str, audience: str, *, refetch_interval: float = 5.0) -> None:
        self.issuer = issuer
        self.audience = audience
        self.jwks_uri = f"{issuer.rstrip('/')}/.well-known/jwks.json"
        self.refetch_interval = refetch_interval
        self._keys = KeySet([])
        self._fetched_at: float | None = None
        self._fetching = asyncio.Lock()

    def _knows(self, kid: object) -> bool:
        return isinstance(kid, str) and any(key.kid == kid for key in self._keys)

    async def _fetch_for(self, kid: object) -> None:
        async with self._fetching:
            now = time.monotonic()
            if self._knows(kid) or (self._fetched_at is not None and now - self._fetched_at < self.refetch_interval):
                return
            self._fetched_at = now
            try:
                async with httpx2.AsyncClient(timeout=10.0, follow_redirects=False, trust_env=False) as http:
                    response = await http.get(self.jwks_uri)
                    response.raise_for_status()
                    self._keys = KeySet.import_key_set(response.json())
            except (httpx2.HTTPError, ValueError, KeyError, TypeError, JoseError) as exc:
                log.warning("cannot fetch %s: %s", self.jwks_uri, type(exc).__name__)

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            header = jws.extract_compact(token.encode("ascii")).headers()
        except (JoseError, ValueError, UnicodeError):
            return None
        if header.get("alg") != ALGORITHM or str(header.get("typ", "")).lower() not in TOKEN_TYPES:
            return None
        kid = header.get("kid")
        if not self._knows(kid):
            await self._fetch_for(kid)
        try:
            claims = jwt.decode(token, self._keys, algorithms=[ALGORITHM]).claims
        except (JoseError, ValueError, TypeError, KeyError):
            return None
        aud = claims.get("aud")
        audiences = aud if isinstance(aud, list) else [aud]
        exp, sub, client_id = claims.get("exp"), claims.get("sub"), claims.get("client_id")
        scope = claims.get("scope", "")
        if (claims.get("iss") != self.issuer or self.audience not in audiences
                or not isinstance(exp, int) or isinstance(exp, bool) or exp <= time.time()
                or not isinstance(sub, str) or not isinstance(client_id, str) or not isinstance(scope, str)):
            return None
        return AccessToken(token=token, client_id=client_id, scopes=scope.split(), expires_at=exp,
                           resource=self.audience, subject=sub, claims=dict(claims))


def _verified_claims() -> dict[str, Any]:
    token = get_access_token()  # the SDK's bearer middleware put it there for this request
    if token is None or token.claims is None:
        raise ToolError("no verified access token on this request")
    return {name: token.claims[name] for name in WHOAMI_CLAIMS if name in token.claims}


def build_demo_server(verifier: DeputyTokenVerifier | None = None) -> MCPServer:
    """Return a fresh demo `MCPServer` with its own copy of the user directory.

    With `verifier`, every request must carry a token it accepts, and ``whoami`` is offered.
    """
    users: list[dict[str, Any]] = copy.deepcopy(list(DEMO_USERS))
    auth: AuthSettings | None = None
    if verifier is not None:
        parts = urlsplit(verifier.audience)
        auth = AuthSettings(
            issuer_url=verifier.issuer,  # type: ignore[arg-type]
            resource_server_url=verifier.audience if parts.scheme in ("http", "https") else None,  # type: ignore[arg-type]
            validate_token_resource=False,  # the verifier checks aud itself, as a string, exactly
        )
    server: MCPServer = MCPServer(
        SERVER_NAME,
        version="0.1.0",
        instructions="A demo server for Deputy: harmless tools plus a destructive delete_user.",
        token_verifier=verifier,
        auth=auth,
    )

    if verifier is not None:
        @server.tool(description="The claims of the access token this request was verified with.")
        def whoami() -> dict[str, Any]:
            return _verified_claims()

    @server.tool(description="Return the given text unchanged.")
    def echo(text: str) -> str:
        return text

    @server.tool(description="Add two integers.")
    def add(a: int, b: int) -> int:
        return a + b

    @server.tool(description="List the users in the demo directory (id and name).")
    def list_users() -> list[dict[str, Any]]:
        return [dict(user) for user in users]

    @server.tool(description="Delete a user from the demo directory. Destructive.")
    def delete_user(id: int, reason: str) -> str:
        for index, user in enumerate(users):
            if user["id"] == id:
                del users[index]
                return f"Deleted user {id} ({user['name']}): {reason}"
        raise ToolError(f"No user with id {id}")

    @server.resource("demo://readme", name="readme", description="About this demo server.", mime_type="text/plain")
    def readme() -> str:
        return README_TEXT

    @server.resource("demo://users/{id}", name="user", description="One user of the demo directory.",
                     mime_type="application/json")
    def user(id: str) -> dict[str, Any]:
        for entry in users:
            if str(entry["id"]) == id:
                return dict(entry)
        raise ValueError(f"No user with id {id}")

    @server.prompt(description="Greet someone by name.")
    def greet(name: str) -> str:
        return f"Please write a short, friendly greeting for {name}."

    @server.completion()  # type: ignore[no-untyped-call, untyped-decorator]  # the SDK leaves it unannotated
    async def complete(ref: PromptReference | ResourceTemplateReference, argument: CompletionArgument,
                       context: CompletionContext | None) -> Completion | None:
        if isinstance(ref, PromptReference) and ref.name == "greet" and argument.name == "name":
            values = [str(entry["name"]) for entry in users]
        elif isinstance(ref, ResourceTemplateReference) and ref.uri == "demo://users/{id}" and argument.name == "id":
            values = [str(entry["id"]) for entry in users]
        else:
            return None
        return Completion(values=[value for value in values if value.startswith(argument.value)])

    return server


def demo_asgi_app(
    server: MCPServer | None = None,
    *,
    path: str = "/mcp",
    stateless: bool = False,
    json_response: bool = False,
    host: str = "127.0.0.1",
    transport_security: TransportSecuritySettings | None = None,
) -> Starlette:
    """Return the Streamable HTTP ASGI app for a demo server, serving MCP at `path`.

    The returned Starlette app's lifespan runs the SDK's session manager; when you
    mount it inside another app, that lifespan does not run on its own (Starlette does
    not propagate lifespans to mounted apps): enter ``server.session_manager.run()``
    in the parent's lifespan instead.

    With the default ``host`` of a loopback address and no ``transport_security``,
    the SDK turns on DNS-rebinding protection and only accepts loopback ``Host`` /
    ``Origin`` headers.
    """
    server = server if server is not None else build_demo_server()
    return server.streamable_http_app(
        streamable_http_path=path,
        stateless_http=stateless,
        json_response=json_response,
        host=host,
        transport_security=transport_security,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo server: Streamable HTTP through uvicorn, or stdio with ``--stdio``."""
    parser = argparse.ArgumentParser(prog="python -m deputy.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8001, help="port to listen on (default 8001)")
    parser.add_argument("--stdio", action="store_true", help="speak MCP over stdin/stdout instead of HTTP")
    parser.add_argument("--stateless", action="store_true", help="stateless Streamable HTTP (no sessions)")
    parser.add_argument("--json-response", action="store_true", help="answer POSTs with JSON, not SSE")
    parser.add_argument("--verify-issuer", metavar="URL",
                        help="require a bearer token from this issuer, checked with its JWKS, on every request")
    parser.add_argument("--audience", metavar="AUD",
                        help="the aud those tokens must carry (default: this server's URL, http://HOST:PORT/mcp)")
    args = parser.parse_args(argv)
    if args.audience is not None and args.verify_issuer is None:
        parser.error("--audience goes with --verify-issuer")
    if args.verify_issuer is not None and args.stdio:
        parser.error("--verify-issuer needs HTTP: a stdio server has no Authorization header")

    verifier = None
    if args.verify_issuer is not None:
        audience = args.audience or f"http://{args.host}:{args.port}/mcp"
        verifier = DeputyTokenVerifier(args.verify_issuer.rstrip("/"), audience)
    server = build_demo_server(verifier)
    if args.stdio:
        server.run("stdio")
        return 0

    import uvicorn

    app = demo_asgi_app(server, stateless=args.stateless, json_response=args.json_response, host=args.host)
    # h11 rather than httptools: httptools keeps trailing whitespace in header values, so a
    # padded Mcp-Name header would fail the SDK's header/body match (RFC 9110 says strip it).
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", http="h11")
    return 0
