"""Cross-origin answers for browser-based MCP clients: the Fetch Standard's CORS protocol (#http-cors-protocol).

A page on another origin (the MCP Inspector's web UI, say) reads Deputy's answers only where they
say it may (Fetch, "HTTP responses", #http-responses). Three kinds of route get three answers:

- **Public OAuth endpoints** — the metadata documents (RFC 8414 §3, RFC 9728 §3), the JWK Set,
  dynamic registration and its management (RFC 7591 §3, RFC 7592 §2), ``/token`` and ``/revoke``:
  any origin, ``Access-Control-Allow-Origin: *`` and never ``Access-Control-Allow-Credentials``.
  These are authenticated by what the request itself carries (a client secret or assertion, a
  registration access token), never by a cookie, and a browser refuses ``*`` for a credentialed
  request (Fetch, "CORS protocol and credentials", #cors-protocol-and-credentials), so Deputy's
  cookies never ride along. Starlette's ``CORSMiddleware`` answers them, corrected in one point: a
  preflight it refuses allows nothing.
- **MCP endpoints** ``/mcp/NAME`` (:class:`McpCors`): only the origins of ``gateway.allowed_origins``,
  compared byte for byte with ``Origin`` as a browser serializes it (Fetch, "HTTP requests",
  #http-requests; RFC 6454 §6.1) and reflected — never ``*``, never another origin, never ``null``.
  A preflight is answered here, before the gateway: a browser sends no ``Authorization`` on it
  (Fetch, "CORS-preflight fetch", #cors-preflight-fetch), so it must not meet authentication, and it
  never reaches an upstream. The gateway's Origin check (:mod:`deputy.gateway.origin_check`) still
  refuses the actual request of an origin not allowed (403).
- Everything else — ``/authorize``, the sign-in, consent and approval pages (navigations, never
  fetched), ``/introspect`` (server-to-server, RFC 7662 §2.1), health checks — gets no CORS answer.

Every answer that depends on ``Origin`` says so with ``Vary: Origin`` (Fetch, "CORS protocol and
HTTP caches", #cors-protocol-and-http-caches). A refused preflight carries no
``Access-Control-Allow-*`` field. No response of Deputy ever carries
``Access-Control-Allow-Credentials``: bearer tokens are sent by script in ``Authorization``, and
nothing cross-origin may use Deputy's cookies.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Final

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from deputy.gateway.responses import JSONRPC_INVALID_REQUEST, jsonrpc_error, send_json
from deputy.origins import serialized_origin

# How long a browser may reuse a preflight's answer (Fetch, "CORS-preflight cache"); modest, so a changed
# configuration is seen within minutes.
MAX_AGE: Final = 600

# MCP Streamable HTTP (2026-07-28): a client sends Authorization, Content-Type, Accept, MCP-Protocol-Version and
# the standard headers that mirror its request (SEP-2243: Mcp-Method, Mcp-Name, and Mcp-Param-{Name} for a tool's
# x-mcp-header arguments); clients of earlier revisions, which the gateway still relays, send Mcp-Session-Id and,
# resuming a stream, Last-Event-ID. Names are compared lower-case, as browsers send them.
MCP_METHODS: Final = frozenset({b"GET", b"POST", b"DELETE"})
MCP_REQUEST_HEADERS: Final = frozenset({
    b"authorization", b"content-type", b"accept", b"mcp-protocol-version", b"mcp-method", b"mcp-name",
    b"mcp-session-id", b"last-event-id",
})
MCP_PARAM_HEADER_PREFIX: Final = b"mcp-param-"
# Response fields a page's script must read: the session id (earlier revisions), the challenge that starts
# discovery (RFC 9728 §5.1), and when to try again after a 503.
MCP_EXPOSED: Final = b"Mcp-Session-Id, WWW-Authenticate, Retry-After"
_PREFLIGHT_VARY: Final = b"Origin, Access-Control-Request-Method, Access-Control-Request-Headers"
_ALLOW_FIELDS: Final = ("access-control-allow-origin", "access-control-allow-methods",
                        "access-control-allow-headers", "access-control-allow-credentials",
                        "access-control-allow-private-network", "access-control-max-age")


class AnyOriginCors(CORSMiddleware):
    """Starlette's CORS for any origin without credentials; a refused preflight allows nothing (no ``*``, no
    methods, no headers), where Starlette would still list them."""

    def __init__(self, app: ASGIApp, methods: Collection[str], headers: Collection[str] = (),
                 expose: Collection[str] = ()) -> None:
        super().__init__(app, allow_origins=["*"], allow_methods=methods, allow_headers=headers,
                         allow_credentials=False, expose_headers=expose, max_age=MAX_AGE)

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != 200:
            for name in _ALLOW_FIELDS:
                del response.headers[name]
        return response


class PublicCors:
    """The Starlette routes: CORS for the public OAuth endpoints by path, none for any other route."""

    def __init__(self, app: ASGIApp, registration: bool) -> None:
        self.app = app
        # Discovery: the TypeScript SDK sends MCP-Protocol-Version with its metadata requests.
        metadata = AnyOriginCors(app, ["GET"], ["MCP-Protocol-Version"])
        # Client authentication in Authorization (client_secret_basic); a 401 challenges in WWW-Authenticate.
        oauth = AnyOriginCors(app, ["POST"], ["Authorization", "MCP-Protocol-Version"], ["WWW-Authenticate"])
        self.paths: dict[str, ASGIApp] = {
            "/.well-known/oauth-authorization-server": metadata,
            "/.well-known/jwks.json": metadata,
            "/.well-known/oauth-protected-resource": metadata,
            "/token": oauth,
            "/revoke": oauth,
        }
        self.prefixes: list[tuple[str, ASGIApp]] = [("/.well-known/oauth-protected-resource/", metadata)]
        if registration:  # no CORS answer for endpoints that do not exist
            # JSON bodies (Content-Type is not safelisted for them); a registration access token in
            # Authorization (RFC 7592 §3); a refused registration may say when to retry (429 Retry-After).
            manage = AnyOriginCors(app, ["GET", "POST", "PUT", "DELETE"], ["Authorization", "MCP-Protocol-Version"],
                                   ["WWW-Authenticate", "Retry-After"])
            self.paths["/register"] = manage
            self.prefixes.append(("/register/", manage))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self._app_for(scope)(scope, receive, send)

    def _app_for(self, scope: Scope) -> ASGIApp:
        if scope["type"] != "http":
            return self.app
        path: str = scope["path"]
        found = self.paths.get(path)
        if found is not None:
            return found
        for prefix, app in self.prefixes:
            if path.startswith(prefix):
                return app
        return self.app


class McpCors:
    """``/mcp/NAME`` for the browser origins the operator allows; a request without ``Origin`` costs one scan of
    its header list and nothing else."""

    def __init__(self, gateway: ASGIApp, allowed_origins: Collection[str]) -> None:
        self.gateway = gateway
        serialized = (serialized_origin(url) for url in allowed_origins)
        self.origins = frozenset(origin.encode() for origin in serialized if origin)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        origin = _origin(scope["headers"])
        if origin is None:
            await self.gateway(scope, receive, send)
            return
        allowed = origin if origin in self.origins else None
        if scope["method"] == "OPTIONS":
            requested = _preflight(scope["headers"])
            if requested is not None:  # a CORS preflight: answered here, never authenticated nor forwarded
                await self._answer_preflight(send, allowed, *requested)
                return
        await self.gateway(scope, receive, _answering(send, allowed))

    async def _answer_preflight(self, send: Send, origin: bytes | None, method: bytes, names: bytes | None) -> None:
        requested = [name.strip().lower() for name in names.split(b",")] if names else []
        if (origin is None or method not in MCP_METHODS
                or not all(name in MCP_REQUEST_HEADERS or _is_param_header(name) for name in requested)):
            # Not an ok status, and nothing allowed: the browser fails the preflight and sends nothing (Fetch,
            # "CORS-preflight fetch").
            await send_json(send, 403, jsonrpc_error(JSONRPC_INVALID_REQUEST, "cross-origin request not allowed"),
                            [(b"vary", _PREFLIGHT_VARY)])
            return
        headers = [(b"access-control-allow-origin", origin), (b"access-control-allow-methods", b"GET, POST, DELETE"),
                   (b"access-control-max-age", str(MAX_AGE).encode()), (b"vary", _PREFLIGHT_VARY),
                   (b"cache-control", b"no-store")]
        if requested:  # each one checked above; Mcp-Param-{Name} names cannot be listed in advance
            headers.append((b"access-control-allow-headers", b", ".join(requested)))
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})


def _origin(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    """The request's ``Origin``; two of them are answered as an origin that matches none (``b""``)."""
    origin = None
    for name, value in headers:
        if name == b"origin":
            origin = value if origin is None else b""
    return origin


def _preflight(headers: list[tuple[bytes, bytes]]) -> tuple[bytes, bytes | None] | None:
    """``Access-Control-Request-Method`` and ``-Headers`` of a preflight ("HTTP requests"); None when it is not one."""
    method = names = None
    for name, value in headers:
        if name == b"access-control-request-method":
            method = value.strip()
        elif name == b"access-control-request-headers":
            names = value if names is None else names + b"," + value
    return None if method is None else (method, names)


def _is_param_header(name: bytes) -> bool:
    return name.startswith(MCP_PARAM_HEADER_PREFIX) and len(name) > len(MCP_PARAM_HEADER_PREFIX)


def _answering(send: Send, origin: bytes | None) -> Send:
    """``send`` that gives the answer Deputy's CORS fields, and only Deputy's: an upstream's own
    ``Access-Control-*`` fields would speak for Deputy's origin, so they are dropped."""

    async def answering(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = [(name, value) for name, value in message.get("headers", ())
                       if not name.lower().startswith(b"access-control-")]
            if origin is not None:
                headers.append((b"access-control-allow-origin", origin))
                headers.append((b"access-control-expose-headers", MCP_EXPOSED))
            headers.append((b"vary", b"Origin"))
            message = {**message, "headers": headers}
        await send(message)

    return answering
