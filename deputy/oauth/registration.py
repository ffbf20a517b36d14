"""Dynamic client registration (RFC 7591 §2, §3), open to loopback redirect URIs only.

This is the registration policy of the walking skeleton: anyone may register a
client whose every redirect URI is an ``http`` loopback address (a native
application, RFC 8252 §7.3 / OAuth 2.1 §8.4.2), so a code can only ever be
delivered to the machine the user sits at. Everything else is refused with
``invalid_redirect_uri``. Redirect URIs may not carry a fragment (RFC 6749 §3.1.2).
"""

from __future__ import annotations

import json
import secrets
import uuid
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from deputy.config import is_loopback_http
from deputy.oauth.errors import NO_STORE, InvalidClientMetadata, InvalidRedirectUri, OAuthError
from deputy.services import Services

AUTH_METHODS = ("none", "client_secret_basic", "client_secret_post")
GRANT_TYPES = ("authorization_code", "refresh_token")
MAX_BODY = 16 * 1024


class RegistrationEndpoint:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def handle(self, request: Request) -> Response:
        try:
            return await self._register(request)
        except OAuthError as exc:
            return exc.response()

    async def _register(self, request: Request) -> Response:
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            raise InvalidClientMetadata("the body must be application/json")
        body = await request.body()
        if len(body) > MAX_BODY:
            raise InvalidClientMetadata("the registration request is too large")
        try:
            metadata = json.loads(body)
        except ValueError:
            raise InvalidClientMetadata("the body is not JSON") from None
        if not isinstance(metadata, dict):
            raise InvalidClientMetadata("the body must be a JSON object")
        redirect_uris = _redirect_uris(metadata)
        # RFC 7591 §2: an omitted method means client_secret_basic.
        method = metadata.get("token_endpoint_auth_method", "client_secret_basic")
        if method not in AUTH_METHODS:
            raise InvalidClientMetadata(f"token_endpoint_auth_method must be one of {', '.join(AUTH_METHODS)}")
        grant_types = metadata.get("grant_types", ["authorization_code"])
        if not isinstance(grant_types, list) or not grant_types or not set(grant_types) <= set(GRANT_TYPES):
            raise InvalidClientMetadata(f"grant_types may contain only {', '.join(GRANT_TYPES)}")
        response_types = metadata.get("response_types", ["code"])
        if response_types != ["code"]:
            raise InvalidClientMetadata("response_types must be [\"code\"]")
        application_type = metadata.get("application_type", "native")
        if application_type != "native":
            raise InvalidClientMetadata("only native clients (loopback redirect URIs) may register here")
        name = metadata.get("client_name") or "Unnamed client"
        if not isinstance(name, str) or len(name) > 200:
            raise InvalidClientMetadata("client_name must be a string of at most 200 characters")
        client_id = uuid.uuid4().hex
        secret = secrets.token_urlsafe(32) if method != "none" else None
        client = await self.services.clients.put(
            client_id=client_id, client_name=name, redirect_uris=redirect_uris, token_endpoint_auth_method=method,
            source="registration", application_type=application_type, grant_types=grant_types,
            client_secret=secret)
        answer: dict[str, Any] = {
            "client_id": client_id,
            "client_id_issued_at": client.created_at,
            "client_name": name,
            "redirect_uris": redirect_uris,
            "grant_types": grant_types,
            "response_types": ["code"],
            "token_endpoint_auth_method": method,
            "application_type": application_type,
        }
        if secret is not None:
            answer["client_secret"] = secret
            answer["client_secret_expires_at"] = 0
        return JSONResponse(answer, status_code=201, headers=NO_STORE)


def _redirect_uris(metadata: dict[str, Any]) -> list[str]:
    uris = metadata.get("redirect_uris")
    if not isinstance(uris, list) or not uris or not all(isinstance(u, str) for u in uris):
        raise InvalidRedirectUri("redirect_uris must be a non-empty list of URLs")
    for uri in uris:
        parts = urlsplit(uri)
        if parts.fragment or "#" in uri:
            raise InvalidRedirectUri(f"{uri}: a redirect URI must not have a fragment")
        if "*" in uri:
            raise InvalidRedirectUri(f"{uri}: wildcards are not allowed")
        if not is_loopback_http(uri) or parts.username or parts.password:
            raise InvalidRedirectUri(f"{uri}: only http loopback redirect URIs may register (native clients)")
    return list(uris)
