"""The token endpoint: parse, authenticate the client, dispatch on ``grant_type`` (OAuth 2.1 §3.2).

Every answer, success or error, is JSON with ``Cache-Control: no-store``
(OAuth 2.1 §3.2.3). A grant the client is not registered for is
``unauthorized_client``; a grant Deputy does not know is ``unsupported_grant_type``.
The JWT bearer grant alone may come without a client (RFC 7523 §3.1: the assertion
is the credential; MCP workload identity federation needs no registration).

Each answer is counted (:mod:`deputy.telemetry.metrics`): a token issued by grant type, a refusal by grant
type and OAuth error code (RFC 6749 §5.2). Both labels come from closed sets — the grant types below, else
``other``; the codes of :mod:`deputy.oauth.errors`, with ``temporarily_unavailable`` for a storage or audit
failure answered 503 — so a client choosing its ``grant_type`` cannot add a series. A body refused while it
arrives (too large or too slow: :mod:`deputy.request_limits`, 413 or 408) never reaches a grant and is not counted.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import Response

from deputy.audit.log import AuditUnavailable
from deputy.config import JWT_BEARER, TOKEN_EXCHANGE
from deputy.oauth.client_auth import authenticate_client, presents_client
from deputy.oauth.errors import (
    InvalidClient,
    InvalidRequest,
    OAuthError,
    TemporarilyUnavailable,
    UnauthorizedClient,
    UnsupportedGrantType,
)
from deputy.oauth.forms import read_form
from deputy.oauth.grants.authorization_code import exchange_code
from deputy.oauth.grants.client_credentials import client_credentials
from deputy.oauth.grants.jwt_bearer import jwt_bearer
from deputy.oauth.grants.refresh_token import refresh
from deputy.oauth.grants.token_exchange import token_exchange
from deputy.services import Services
from deputy.storage.clients import Client
from deputy.storage.grants import ClientChanged

log = logging.getLogger(__name__)

Grant = Callable[[Services, Mapping[str, str], Client], Awaitable[Response]]
GRANTS: dict[str, Grant] = {
    "authorization_code": exchange_code,
    "refresh_token": refresh,
    "client_credentials": client_credentials,
    TOKEN_EXCHANGE: token_exchange,
    JWT_BEARER: jwt_bearer,
}
# The metrics' grant_type label: short names for the URIs of RFC 8693 §2.1 and RFC 7523 §2.1.
GRANT_LABELS = {"authorization_code": "authorization_code", "refresh_token": "refresh_token",
                "client_credentials": "client_credentials", TOKEN_EXCHANGE: "token_exchange", JWT_BEARER: "jwt_bearer"}
OTHER_GRANT = "other"  # missing, unknown, or in a form that could not be read
# Grants that write their grant with ``confirm=client`` (the client's row compared where it is held), so their
# client may be authenticated against a remembered copy of that row (deputy.oauth.client_auth).
CONFIRMING_GRANTS = frozenset({"client_credentials", TOKEN_EXCHANGE})


class TokenEndpoint:
    def __init__(self, services: Services) -> None:
        self.services = services
        # One series per grant type from the start (a rate over a series that appears late misses its first
        # count), each bound once; refusals, rarer, are looked up when they happen.
        self.issued = {label: services.metrics.tokens_issued.labels(label) for label in GRANT_LABELS.values()}
        self.refused = services.metrics.token_refusals

    async def handle(self, request: Request) -> Response:
        label = OTHER_GRANT
        try:
            form = await read_form(request)
            label = GRANT_LABELS.get(form.get("grant_type", ""), OTHER_GRANT)
            response = await self._grant(request, form)
        except OAuthError as exc:
            self.refused.labels(label, exc.code).inc()
            raise
        except (SQLAlchemyError, AuditUnavailable):  # answered 503 by the application (deputy.app)
            self.refused.labels(label, TemporarilyUnavailable.code).inc()
            raise
        self.issued[label].inc()
        return response

    async def _grant(self, request: Request, form: dict[str, str]) -> Response:
        grant_type = form.get("grant_type")
        if not grant_type:
            raise InvalidRequest("grant_type is required")
        grant = GRANTS.get(grant_type)
        if grant is None:
            raise UnsupportedGrantType(f"grant_type {grant_type} is not supported")
        if grant_type == JWT_BEARER and not presents_client(request, form):
            return await jwt_bearer(self.services, form, None)
        remembered = grant_type in CONFIRMING_GRANTS
        client = await authenticate_client(request, form, self.services, remembered=remembered)
        if grant_type not in client.grant_types:
            raise UnauthorizedClient(f"this client is not registered for {grant_type}")
        try:
            return await grant(self.services, form, client)
        except ClientChanged:
            # Authenticated against a copy of the client's row that has changed since (rotated secret or keys,
            # re-registered): nothing was written. Once more, as without the copy; an assertion's jti is used up.
            self.services.clients.forget(client.client_id)
            if not remembered or client.token_endpoint_auth_method == "private_key_jwt":
                raise InvalidClient("the client's registration changed during this request; try again") from None
            client = await authenticate_client(request, form, self.services)
            if grant_type not in client.grant_types:
                raise UnauthorizedClient(f"this client is not registered for {grant_type}") from None
            try:
                return await grant(self.services, form, client)
            except ClientChanged:
                raise InvalidClient("the client's registration changed during this request; try again") from None
