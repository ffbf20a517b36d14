"""The token endpoint: parse, authenticate the client, dispatch on ``grant_type`` (OAuth 2.1 §3.2).

Every answer, success or error, is JSON with ``Cache-Control: no-store``
(OAuth 2.1 §3.2.3). A grant the client is not registered for is
``unauthorized_client``; a grant Deputy does not know is ``unsupported_grant_type``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping

from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import Response

from deputy.oauth.client_auth import authenticate_client
from deputy.oauth.errors import (
    InvalidRequest,
    OAuthError,
    TemporarilyUnavailable,
    UnauthorizedClient,
    UnsupportedGrantType,
)
from deputy.oauth.grants.authorization_code import exchange_code
from deputy.oauth.grants.refresh_token import refresh
from deputy.services import Services
from deputy.storage.clients import Client

log = logging.getLogger(__name__)

Grant = Callable[[Services, Mapping[str, str], Client], Awaitable[Response]]
GRANTS: dict[str, Grant] = {
    "authorization_code": exchange_code,
    "refresh_token": refresh,
}


class TokenEndpoint:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def handle(self, request: Request) -> Response:
        try:
            return await self._handle(request)
        except OAuthError as exc:
            return exc.response()
        except SQLAlchemyError:
            log.exception("token endpoint: storage failure")
            return TemporarilyUnavailable("storage is unavailable; try again").response()

    async def _handle(self, request: Request) -> Response:
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
            raise InvalidRequest("the body must be application/x-www-form-urlencoded")
        raw = await request.form()
        form: dict[str, str] = {}
        for key, value in raw.multi_items():
            if key in form:
                raise InvalidRequest(f"{key} is repeated")  # RFC 6749 §3.2
            if not isinstance(value, str):
                raise InvalidRequest("file uploads are not accepted")
            form[key] = value
        grant_type = form.get("grant_type")
        if not grant_type:
            raise InvalidRequest("grant_type is required")
        grant = GRANTS.get(grant_type)
        if grant is None:
            raise UnsupportedGrantType(f"grant_type {grant_type} is not supported")
        client = await authenticate_client(request, form, self.services.registry)
        if grant_type not in client.grant_types:
            raise UnauthorizedClient(f"this client is not registered for {grant_type}")
        return await grant(self.services, form, client)
