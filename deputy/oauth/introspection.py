"""Token introspection (RFC 7662).

``POST /introspect`` with ``token`` and an optional ``token_type_hint``. The caller
must be a confidential client and authenticate (RFC 7662 §2.1, §4: no anonymous
token scanning); it learns only about tokens issued to itself. Anything else —
unknown, malformed, expired, revoked, used, or another client's — is
``{"active": false}`` and nothing more (§2.2).

An active access token is described by the claims a resource server needs (§2.2):
``iss sub aud client_id scope exp iat jti token_type`` plus ``nbf``, ``auth_time``
and the delegation claims ``act``, ``may_act`` and ``txn`` when the token carries
them. An active refresh token: ``iss sub aud client_id scope exp``.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from deputy.clock import now
from deputy.oauth.client_auth import authenticate_client
from deputy.oauth.errors import NO_STORE, InvalidClient, InvalidRequest
from deputy.oauth.forms import read_form
from deputy.oauth.presented_tokens import PresentedAccessToken, PresentedRefreshToken, TokenIdentifier
from deputy.services import Services
from deputy.storage.clients import Client

log = logging.getLogger(__name__)

INACTIVE: dict[str, Any] = {"active": False}
PASSED_THROUGH = ("nbf", "auth_time", "act", "may_act", "txn")


class IntrospectionEndpoint:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.tokens = TokenIdentifier(services)

    async def handle(self, request: Request) -> Response:
        form = await read_form(request)
        client = await authenticate_client(request, form, self.services)
        if client.is_public:
            raise InvalidClient("introspection is for clients that authenticate; public clients cannot")
        token = form.get("token")
        if not token:
            raise InvalidRequest("token is required")
        presented = await self.tokens.identify(token, form.get("token_type_hint"))
        if isinstance(presented, PresentedAccessToken):
            body = self._access_token(presented, client)
        elif isinstance(presented, PresentedRefreshToken):
            body = self._refresh_token(presented, client)
        else:
            body = INACTIVE
        return JSONResponse(body, headers=NO_STORE)

    def _access_token(self, presented: PresentedAccessToken, client: Client) -> dict[str, Any]:
        claims = presented.claims
        if claims.client_id != client.client_id or claims.expires_at <= now():
            return INACTIVE
        grant = presented.grant
        if claims.grant_id is not None and (grant is None or grant.revoked_at is not None):
            return INACTIVE
        body: dict[str, Any] = {
            "active": True,
            "iss": claims.raw["iss"],
            "sub": claims.subject,
            "aud": claims.audience,
            "client_id": claims.client_id,
            "scope": claims.raw.get("scope", ""),
            "exp": claims.expires_at,
            "iat": claims.issued_at,
            "jti": claims.token_id,
            "token_type": "Bearer",
        }
        body.update({name: claims.raw[name] for name in PASSED_THROUGH if name in claims.raw})
        return body

    def _refresh_token(self, presented: PresentedRefreshToken, client: Client) -> dict[str, Any]:
        state = presented.state
        grant = state.grant
        if grant.client_id != client.client_id or not state.is_usable(now()):
            return INACTIVE
        return {
            "active": True,
            "iss": self.services.settings.issuer,
            "sub": grant.user_id,
            "aud": grant.resource,
            "client_id": grant.client_id,
            "scope": grant.scope,
            "exp": state.expires_at,
        }
