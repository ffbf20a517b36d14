"""Client authentication at the token, revocation and introspection endpoints
(OAuth 2.1 §2.4, RFC 6749 §2.3.1, RFC 7523 §2.2).

Exactly one method per request. A client registered as confidential must
authenticate with its registered method — ``client_secret_basic``,
``client_secret_post`` or ``private_key_jwt`` (:mod:`deputy.oauth.client_assertions`);
a public client (``none``) identifies itself with ``client_id`` and proves possession
through PKCE instead.

With ``remembered=True`` (the token endpoint, for the grants that confirm the client where they write:
client credentials and token exchange) the client's row may come from memory; a request it refuses is
checked once more against the row as stored, so a secret or key changed elsewhere is not refused by a
stale copy, and one the copy accepts is refused where the grant is written (``ClientChanged``).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from urllib.parse import unquote

from starlette.requests import Request

from deputy.clock import now
from deputy.oauth.client_assertions import (
    AssertionContext,
    peek_client_id,
    require_assertion_type,
    verify_client_assertion,
)
from deputy.oauth.errors import InvalidClient, InvalidRequest
from deputy.services import Services
from deputy.storage.clients import Client

SECRET_METHODS = ("client_secret_basic", "client_secret_post")
METHODS = ("none", *SECRET_METHODS, "private_key_jwt")


async def authenticate_client(request: Request, form: Mapping[str, str], services: Services, *,
                              remembered: bool = False) -> Client:
    basic = _basic_credentials(request.headers.get("authorization"))
    posted_secret = form.get("client_secret")
    uses_assertion = "client_assertion" in form or "client_assertion_type" in form
    if sum((basic is not None, posted_secret is not None, uses_assertion)) > 1:
        raise InvalidRequest("use exactly one client authentication method")
    secret: str | None = None
    assertion: str | None = None
    if basic is not None:
        client_id, secret = basic
        method = "client_secret_basic"
    elif uses_assertion:
        assertion = require_assertion_type(form)
        client_id = peek_client_id(assertion)
        method = "private_key_jwt"
    else:
        client_id = form.get("client_id") or ""
        secret = posted_secret
        method = "client_secret_post" if secret is not None else "none"
    if method != "none" and form.get("client_id") not in (None, client_id):
        raise InvalidRequest("client_id in the body differs from the authenticated client")
    if not client_id:
        raise InvalidClient("client authentication failed")
    client = await services.registry.find(client_id, remembered=remembered)
    try:
        return await _authenticated(client, method, secret, assertion, services)
    except InvalidClient:
        if not remembered or client is None or not client.is_active:  # none of these came from memory
            raise
        # The copy may be older than a new secret or key: the row as stored decides a refusal.
        stored = await services.registry.find(client_id)
        if stored == client:
            raise
        services.clients.forget(client_id)
        return await _authenticated(stored, method, secret, assertion, services)


async def _authenticated(client: Client | None, method: str, secret: str | None, assertion: str | None,
                         services: Services) -> Client:
    if client is None or not client.is_active:
        raise InvalidClient("client authentication failed")
    if client.token_endpoint_auth_method != method:
        raise InvalidClient(f"this client must authenticate with {client.token_endpoint_auth_method}")
    if assertion is not None:
        settings = services.settings
        context = AssertionContext(issuer=settings.issuer, token_endpoint=f"{settings.issuer}/token",
                                   leeway=settings.clock_leeway, now=now())
        await verify_client_assertion(assertion, client, context, services.clients.remember_assertion,
                                      services.client_keys)
    elif method != "none" and (secret is None or not await client.verify_secret(secret)):
        raise InvalidClient("client authentication failed")
    return client


def confirmable(client: Client) -> Client | None:
    """The copy a grant's transaction compares with the stored row (``GrantRepository.create(confirm=…)``): every
    client from the clients table. A client resolved from its metadata document is the document's, not the row's
    (:mod:`deputy.oauth.client_documents` keeps both as before), so it is never remembered here nor compared."""
    return None if client.source == "document" else client


def presents_client(request: Request, form: Mapping[str, str]) -> bool:
    """Whether the request carries any client identification or authentication."""
    fields = ("client_id", "client_secret", "client_assertion", "client_assertion_type")
    return request.headers.get("authorization", "").lower().startswith("basic ") or any(f in form for f in fields)


def _basic_credentials(header: str | None) -> tuple[str, str] | None:
    if header is None or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise InvalidClient("malformed Basic credentials") from None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise InvalidClient("malformed Basic credentials")
    # RFC 6749 §2.3.1: both parts are form-urlencoded before base64.
    return unquote(client_id.replace("+", " ")), unquote(secret.replace("+", " "))
