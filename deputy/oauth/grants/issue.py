"""The token response every grant ends with (OAuth 2.1 §3.2.3)."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

from deputy.oauth.access_tokens import mint_access_token
from deputy.oauth.errors import NO_STORE
from deputy.services import Services
from deputy.storage.grants import Grant


def token_response(
    services: Services, grant: Grant, scope: str, refresh_token: str | None, *, user_authenticated: bool = True
) -> JSONResponse:
    """``user_authenticated`` is False when no user signed in (client credentials): no ``auth_time``."""
    settings = services.settings
    access_token, _claims = mint_access_token(
        services.keyring,
        issuer=settings.issuer,
        subject=grant.user_id,
        client_id=grant.client_id,
        audience=grant.resource,
        scope=scope,
        ttl=settings.access_token_ttl,
        grant_id=grant.grant_id,
        auth_time=grant.auth_time if user_authenticated else None,
    )
    body: dict[str, Any] = {
        "access_token": access_token,
        "token_type": "Bearer",
        "expires_in": settings.access_token_ttl,
        "scope": scope,
    }
    if refresh_token is not None:
        body["refresh_token"] = refresh_token
    return JSONResponse(body, headers=NO_STORE)
