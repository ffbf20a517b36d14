"""Token revocation (RFC 7009).

``POST /revoke`` with ``token`` and an optional ``token_type_hint``, by an
authenticated client (RFC 7009 §2.1; a public client identifies itself with its
``client_id``, §5). Revoking either kind of token revokes the grant it belongs to —
the refresh-token family and every access token carrying its ``sid``, which the
gateway stops accepting within its revocation staleness bound (RFC 7009 §2.1 allows
revoking related tokens). A token issued to another client is refused; a token
Deputy does not know, or one already revoked or expired, is answered 200 (§2.2).
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import Response

from deputy.oauth.client_auth import authenticate_client
from deputy.oauth.errors import NO_STORE, InvalidRequest
from deputy.oauth.forms import read_form
from deputy.oauth.presented_tokens import PresentedAccessToken, TokenIdentifier
from deputy.services import Services

log = logging.getLogger(__name__)


class RevocationEndpoint:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.tokens = TokenIdentifier(services)

    async def handle(self, request: Request) -> Response:
        form = await read_form(request)
        client = await authenticate_client(request, form, self.services)
        token = form.get("token")
        if not token:
            raise InvalidRequest("token is required")
        presented = await self.tokens.identify(token, form.get("token_type_hint"))
        if presented is not None:
            if isinstance(presented, PresentedAccessToken):
                owner, grant = presented.claims.client_id, presented.grant
            else:
                owner, grant = presented.state.grant.client_id, presented.state.grant
            if owner != client.client_id:
                raise InvalidRequest("the token was not issued to this client")
            if grant is not None:
                await self.services.grants.revoke(grant.grant_id, "revoked_by_client")
        return Response(status_code=200, headers=NO_STORE)
