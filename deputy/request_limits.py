"""Caps on what a request may make Deputy hold before any handler has decided anything.

Every route except the gateway (``/mcp/NAME`` reads JSON-RPC bodies under its own cap) is wrapped
by :class:`RequestLimits`, a pure ASGI middleware:

- the body is capped per route kind (:func:`body_cap`), **while it is read**: a declared
  ``Content-Length`` above the cap is refused before a byte is read, and a chunked or slow body is
  counted as it arrives and refused as soon as the count passes the cap — RFC 9110 §15.5.14
  (413 Content Too Large);
- a body that has not finished within ``[limits] body_timeout`` of its headers is cut — RFC 9110
  §15.5.9 (408 Request Timeout);
- a query string longer than :data:`MAX_QUERY_STRING` is refused — RFC 9110 §15.5.15 (414 URI Too
  Long); the authorization request (RFC 6749 §4.1.1) is the only route that carries parameters there.

Each refusal closes the connection (RFC 9110 §7.6.1 ``Connection: close``), so the rest of an
oversized body is never read: the server stops reading instead of draining it. So does any answer
given before the body was read to its end (a handler that never reads it, a 405).
"""

from __future__ import annotations

import asyncio

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

KIB = 1024
# /token, /revoke, /introspect: a token exchange carries two tokens and a client assertion, a few KiB each.
OAUTH_FORM_BODY = 64 * KIB
# /register and /register/{id}: client metadata with an inline JWKS and a software statement.
REGISTRATION_BODY = 64 * KIB
# Everything else: the sign-in, consent and approval forms (a handful of short fields); no other route reads a body.
PAGE_FORM_BODY = 8 * KIB
MAX_QUERY_STRING = 8 * KIB

_OAUTH_FORM_PATHS = frozenset({"/token", "/revoke", "/introspect"})


def body_cap(path: str) -> int:
    """The most body bytes a request to ``path`` may send."""
    if path in _OAUTH_FORM_PATHS:
        return OAUTH_FORM_BODY
    if path == "/register" or path.startswith("/register/"):
        return REGISTRATION_BODY
    return PAGE_FORM_BODY


class RequestRefused(Exception):
    """A request refused for its size or its slowness; the connection is closed after the answer."""

    def __init__(self, status: int, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.description = description

    def response(self) -> JSONResponse:
        # The OAuth shape (RFC 6749 §5.2), since most capped routes are OAuth endpoints; the status says which cap.
        return JSONResponse({"error": "invalid_request", "error_description": self.description},
                            status_code=self.status,
                            headers={"Connection": "close", "Cache-Control": "no-store"})


class CappedBody:
    """A ``receive`` that counts body bytes against a cap and a deadline until the body is complete."""

    def __init__(self, receive: Receive, cap: int, deadline: float) -> None:
        self._receive = receive
        self.cap = cap
        self.deadline = deadline
        self.received = 0
        self.complete = False

    async def __call__(self) -> Message:
        if self.complete:  # after the body only http.disconnect can come, and waiting for it is not a body read
            return await self._receive()
        try:
            async with asyncio.timeout_at(self.deadline):
                message = await self._receive()
        except TimeoutError:
            raise RequestRefused(408, "the request body did not arrive in time") from None
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.cap:
                raise RequestRefused(413, f"the request body is larger than {self.cap} bytes")
            self.complete = not message.get("more_body", False)
        return message


class RequestLimits:
    def __init__(self, app: ASGIApp, body_timeout: float) -> None:
        self.app = app
        self.body_timeout = body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cap = body_cap(scope["path"])
        refusal = _refusal_before_reading(scope, cap)
        if refusal is not None:
            await refusal.response()(scope, receive, send)
            return
        body = CappedBody(receive, cap, asyncio.get_running_loop().time() + self.body_timeout)
        has_body = _content_length(scope) not in (None, 0) or any(
            name == b"transfer-encoding" for name, _value in scope["headers"])
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = list(message.get("headers", []))
                if has_body and not body.complete and (b"connection", b"close") not in headers:
                    # Answered without reading the whole body (e.g. 405): close rather than let the server drain it.
                    message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        try:
            await self.app(scope, body, tracking_send)
        except RequestRefused as refused:
            # Reached only when the wrapped app has no handler for it (Deputy's has one, see deputy.app).
            if started:
                raise
            await refused.response()(scope, receive, send)


def _refusal_before_reading(scope: Scope, cap: int) -> RequestRefused | None:
    if len(scope.get("query_string", b"")) > MAX_QUERY_STRING:
        return RequestRefused(414, f"the query string is longer than {MAX_QUERY_STRING} bytes")
    declared = _content_length(scope)
    if declared is not None and declared > cap:
        return RequestRefused(413, f"the request body is larger than {cap} bytes")
    return None


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit():
            return int(value)
    return None

