"""Calls to a ``credentials = "oauth"`` server: the user's own upstream token, or where she must connect first.

Such a server is called with the token Deputy holds for *this user* at the upstream's authorization server
(:mod:`deputy.connections`), never with the client's (MCP "Token Passthrough"). The gateway asks for it only after
the policy decided the call and the decision is durable (:mod:`deputy.gateway.proxy`): a denied call is answered
with its denial and never sends anyone to connect. One exception: a server with policies whose tools have not been
read yet (Deputy has no credential of its own there; they are read with the caller's connection,
:mod:`deputy.gateway.policy_lifecycle`) cannot decide for a caller without a usable connection, so she is sent to
connect before any decision (:meth:`OAuthCall.tools_unread`); once read, no decision needs a connection. An agent
acting for Alice (RFC 8693 token exchange) uses
Alice's connection: the principal's ``user`` is hers. A token without a user (client credentials: ``sub`` is the
client itself) has no connection to use and none to make.

When she has no usable connection (:class:`~deputy.connections.model.ConnectionNeeded`: none yet, broken, or the
upstream wants more scope), the answer points at ``connect_url`` (``{public_url}/connect/NAME``: her Deputy
sign-in, then the upstream's consent), in the first form the client understands:

1. MCP 2026-07-28 multi round-trip: the request's ``_meta`` declares URL-mode elicitation →
   ``resultType: "input_required"`` with one URL-mode ``elicitation/create``; the retry carrying Deputy's
   ``requestState`` is decided and recorded again, asks for her headers again (nothing is read from the state: a
   forged one changes nothing), and reaches the upstream without Deputy's parts
   (:func:`~deputy.gateway.held_calls.without_own_input`, shared with held calls). A ``decline``/``cancel``
   answer gets form 3.
2. MCP 2025-11-25: the client declared ``capabilities.elicitation.url`` in its ``initialize`` — this request's, or
   its session's (remembered in the session id, :class:`~deputy.gateway.sessions.SessionBinder`; for an upstream
   that keeps no sessions, in a session of Deputy's own that reaches the upstream as none) → the JSON-RPC error
   ``URLElicitationRequiredError`` (-32042) with ``data.elicitations`` ``[{mode: "url", elicitationId, url,
   message}]`` (client/elicitation §"URL Elicitation Required Error"), plus ``connect_url``, ``server``, ``reason``.
3. Otherwise the JSON-RPC error :data:`CONNECTION_REQUIRED` whose ``data`` carries ``connect_url``, ``server`` and
   ``reason``. Not -32042: the specification allows that code only for URL elicitations, and this client has not
   said it can show one. -32004 is in JSON-RPC 2.0 §5.1's implementation-defined server-error range, next to
   Deputy's policy denial (-32003), on none of MCP's codes (-32000..-32002, -32020..-32022, -32042).

A request is answered with HTTP 200 (a JSON-RPC response, like any tool error); a notification, a GET stream or a
DELETE, which have no response to carry it, with 403 and the same error. When her connection cannot be used for
a reason she cannot fix (:class:`~deputy.connections.errors.ConnectionFailed`, or the database holding it is
unreachable: ``storage_unavailable``), the answer is 503 with
``Retry-After``, or 502 when the upstream's authorization server is unreachable; its message names no secret (the
detail goes to the log). The upstream answering her token with 401 or 403 (RFC 6750 §3.1) is handed to
:meth:`Connections.refused <deputy.connections.service.Connections.refused>`: the same request (its body is in
memory; a 401/403 means the upstream did not process it) is sent once more with fresh headers, or answered as
above (step-up after ``insufficient_scope``); the upstream's ``WWW-Authenticate`` is never relayed.

Each such answer marks the call's ``call.outcome`` record (:data:`~deputy.gateway.audit_stage.NOT_FORWARDED`) and
its observed outcome (``connection_needed``).

``deputy.connections`` does not import the gateway (whom a call is made for is its structural
:class:`~deputy.connections.model.CallMaker`), so the gateway uses its types directly: ``ConnectionNeeded``,
``ConnectionFailed``; only what it asks of ``Connections`` is named here as a protocol (:class:`UserConnections`),
so a test can hand the gateway another implementation.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.exc import SQLAlchemyError
from starlette.types import Send

from deputy.config import UpstreamServer
from deputy.connections.errors import ConnectionFailed
from deputy.connections.model import ConnectionNeeded
from deputy.gateway.audit_stage import NOT_FORWARDED
from deputy.gateway.exchange import Headers
from deputy.gateway.held_calls import (
    CONNECT_INPUT_KEY,
    CONNECT_STATE_PREFIX,
    declares_url_elicitation,
    declined,
    url_input_required,
)
from deputy.gateway.jsonrpc import McpMessage
from deputy.gateway.observation import RequestObservation, RequestOutcome
from deputy.gateway.principal import Principal
from deputy.gateway.responses import JSONRPC_INTERNAL_ERROR, jsonrpc_error
from deputy.gateway.sessions import SessionBinder

log = logging.getLogger(__name__)

CONNECTION_REQUIRED = -32004
URL_ELICITATION_REQUIRED = -32042  # MCP 2025-11-25, client/elicitation §"Error Handling"
RETRY_AFTER = b"5"
NO_USER = "no_user"  # why a token without a user is not forwarded


class UserConnections(Protocol):
    """What the gateway asks :class:`deputy.connections.service.Connections` for each call."""

    async def headers_for(self, server: UpstreamServer, principal: Principal
                          ) -> Sequence[tuple[str, str]] | ConnectionNeeded: ...

    async def refused(self, server: UpstreamServer, principal: Principal, status: int,
                      www_authenticate: str | None, sent: str | None = None) -> ConnectionNeeded | None: ...


@dataclass(frozen=True, slots=True)
class StorageFailure:
    """Her connection could not be read: the database is unreachable (answered 503 like a policy store that is)."""

    server: str
    detail: str
    reason: str = "storage_unavailable"


UnusableConnection = ConnectionFailed | StorageFailure  # her connection cannot be used now (``detail``: log only)


def unusable(exc: Exception, server: str) -> UnusableConnection:
    """``exc`` when it is the connections' own failure, or the store they read failing; any other error is not the
    gateway's to answer."""
    if isinstance(exc, ConnectionFailed):
        return exc
    if isinstance(exc, (SQLAlchemyError, OSError)):
        return StorageFailure(server, type(exc).__name__)
    raise exc


def initialize_declares_url_elicitation(message: McpMessage | None) -> bool:
    """Whether ``message`` is an ``initialize`` whose ``capabilities.elicitation`` has ``url`` (MCP 2025-11-25)."""
    if message is None or message.method != "initialize" or not isinstance(message.params, dict):
        return False
    capabilities = message.params.get("capabilities")
    elicitation = capabilities.get("elicitation") if isinstance(capabilities, dict) else None
    return isinstance(elicitation, dict) and isinstance(elicitation.get("url"), dict)


def needed_answer(needed: ConnectionNeeded, message: McpMessage | None,
                  session_declares_url: bool) -> tuple[int, dict[str, Any]]:
    """The status and body that send the user to ``needed.connect_url`` (the forms of the module docstring)."""
    data = {"server": needed.server, "reason": needed.reason, "connect_url": needed.connect_url}
    if message is None or message.id is None:
        return 403, jsonrpc_error(CONNECTION_REQUIRED, needed.message, data)
    if declares_url_elicitation(message):
        if declined(message, CONNECT_INPUT_KEY):  # she chose not to connect: the plain answer, not the prompt again
            return 200, jsonrpc_error(CONNECTION_REQUIRED, needed.message, data, request_id=message.id)
        return 200, url_input_required(message, CONNECT_INPUT_KEY, needed.connect_url, needed.message,
                                       CONNECT_STATE_PREFIX + needed.server)
    if session_declares_url or initialize_declares_url_elicitation(message):
        elicitation = {"mode": "url", "elicitationId": uuid.uuid4().hex, "url": needed.connect_url,
                       "message": needed.message}
        return 200, jsonrpc_error(URL_ELICITATION_REQUIRED, needed.message, {"elicitations": [elicitation], **data},
                                  request_id=message.id)
    return 200, jsonrpc_error(CONNECTION_REQUIRED, needed.message, data, request_id=message.id)


def failure_answer(failed: UnusableConnection, request_id: str | int | None) -> tuple[int, dict[str, Any]]:
    """503 (try again later), or 502 when the upstream's authorization server did not answer; no detail."""
    data = {"server": failed.server, "reason": failed.reason}
    if failed.reason == "upstream_unavailable":
        return 502, jsonrpc_error(JSONRPC_INTERNAL_ERROR, f"the authorization server of {failed.server} is "
                                  f"unreachable; try again later", data, request_id=request_id)
    return 503, jsonrpc_error(JSONRPC_INTERNAL_ERROR, f"your connection to {failed.server} cannot be used right now; "
                              f"try again later", data, request_id=request_id)


async def send_unforwarded(send: Send, status: int, body: Any, why: tuple[str, str],
                           headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
    """:func:`~deputy.gateway.responses.send_json` with the mark the call's outcome record reads."""
    payload = json.dumps(body, separators=(",", ":")).encode()
    await send({"type": "http.response.start", "status": status, NOT_FORWARDED: why, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
        (b"cache-control", b"no-store"), *headers]})
    await send({"type": "http.response.body", "body": payload})


class OAuthCall:
    """One request to a ``credentials = "oauth"`` server: the user's headers, got after the decision, and what to
    do when the upstream refuses them (:class:`~deputy.gateway.exchange.UpstreamRefusals`)."""

    __slots__ = ("connections", "headers", "message", "principal", "retried", "seen", "server",
                 "session_declares_url", "sessions")

    def __init__(self, connections: UserConnections | None, server: UpstreamServer, principal: Principal,
                 message: McpMessage | None, sessions: SessionBinder, session_id: str | None,
                 seen: RequestObservation) -> None:
        assert connections is not None  # create_app always gives the gateway the connections
        self.connections = connections
        self.server = server
        self.principal = principal
        self.message = message
        self.sessions = sessions
        self.session_declares_url = sessions.declares_url_elicitation(session_id)  # checked by the gateway
        self.seen = seen
        self.headers: Headers = ()
        self.retried = False

    @property
    def _no_user_principal(self) -> bool:
        """Client credentials: ``sub`` is the client itself, no user."""
        return self.principal.user == self.principal.agent and not self.principal.actors

    @property
    def request_id(self) -> str | int | None:
        return self.message.id if self.message is not None else None

    async def prepare(self, send: Send) -> bool:
        """Get her headers (:attr:`headers`); False when the client was answered instead."""
        if self._no_user_principal:
            await self._no_user(send)
            return False
        headers = await self._headers_for(send)
        if headers is None:
            return False
        self.headers = headers
        return True

    def bind_session(self, upstream_id: str) -> str:
        """The session id the client sees: an ``initialize`` declaring URL-mode elicitation marks it."""
        return self.sessions.outward(self.principal, upstream_id,
                                     url_elicitation=initialize_declares_url_elicitation(self.message))

    def own_session(self, status: int) -> str | None:
        """A stateless upstream answered this request without a session: when it is an ``initialize`` that
        declared URL-mode elicitation and succeeded, a session of Deputy's own that remembers the declaration."""
        if 200 <= status < 300 and initialize_declares_url_elicitation(self.message):
            return self.sessions.own(self.principal)
        return None

    async def refused(self, send: Send, status: int, www_authenticate: str | None) -> Headers | None:
        """The upstream answered her token with ``status`` (401/403): fresh headers for the one retry, else None
        (the client has been answered: connect, step up, or the upstream refused even the retry)."""
        try:
            needed = await self.connections.refused(self.server, self.principal, status, www_authenticate,
                                                    sent=sent_token(self.headers))
        except Exception as exc:  # the connections' failure (unusable), else raised again
            await self._failed(send, unusable(exc, self.server.name))
            return None
        if needed is not None:
            await self._needed(send, needed)
            return None
        if self.retried:
            log.warning("upstream %s refused a user's token again after a refresh (%d)", self.server.name, status)
            body = jsonrpc_error(JSONRPC_INTERNAL_ERROR, f"{self.server.name} refused your account's token",
                                 {"server": self.server.name}, request_id=self.request_id)
            await send_unforwarded(send, 502, body, ("connection_failed", "upstream_refused"))
            return None
        self.retried = True
        return await self._headers_for(send)

    async def _headers_for(self, send: Send) -> Headers | None:
        try:
            headers = await self.connections.headers_for(self.server, self.principal)
        except Exception as exc:  # the connections' failure (unusable), else raised again
            await self._failed(send, unusable(exc, self.server.name))
            return None
        if isinstance(headers, ConnectionNeeded):
            await self._needed(send, headers)
            return None
        return headers

    async def tools_unread(self, send: Send, problem: ConnectionNeeded | Exception) -> None:
        """The server's tools are not read yet and her connection cannot read them (``problem``): no decision can
        be made, and she is answered as a forwarded call without a usable connection would be."""
        if self._no_user_principal:
            await self._no_user(send)
        elif isinstance(problem, ConnectionNeeded):
            await self._needed(send, problem)
        else:
            await self._failed(send, unusable(problem, self.server.name))

    async def _needed(self, send: Send, needed: ConnectionNeeded) -> None:
        status, body = needed_answer(needed, self.message, self.session_declares_url)
        self.seen.outcome = RequestOutcome.CONNECTION_NEEDED
        await send_unforwarded(send, status, body, ("connection_needed", needed.reason))

    async def _no_user(self, send: Send) -> None:
        """Nobody can connect for a token issued to a client for itself: no ``connect_url``, nothing to retry."""
        server = self.server
        body = jsonrpc_error(CONNECTION_REQUIRED, f"{server.title or server.name} is called with each user's own "
                             f"account; a token a client holds for itself has none", {"server": server.name,
                             "reason": NO_USER}, request_id=self.request_id)
        self.seen.outcome = RequestOutcome.CONNECTION_NEEDED
        await send_unforwarded(send, 200 if self.request_id is not None else 403, body,
                               ("connection_needed", NO_USER))

    async def _failed(self, send: Send, failed: UnusableConnection) -> None:
        log.warning("connection to %s unusable for a call: %s: %s", failed.server, failed.reason, failed.detail)
        status, body = failure_answer(failed, self.request_id)
        await send_unforwarded(send, status, body, ("connection_failed", failed.reason),
                               ((b"retry-after", RETRY_AFTER),) if status == 503 else ())


def sent_token(headers: Headers) -> str | None:
    """The bearer token in the ``Authorization`` header of ``headers`` (what the refused request carried)."""
    for name, value in headers:
        if name.lower() == "authorization" and value[:7].lower() == "bearer ":
            return value[7:]
    return None
