"""Client authentication at the token endpoint (OAuth 2.1 §2.4, RFC 6749 §2.3.1).

Exactly one method per request. A client registered as confidential must
authenticate with its registered method; a public client (``none``) identifies
itself with ``client_id`` and proves possession through PKCE instead.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from urllib.parse import unquote

from starlette.requests import Request

from deputy.oauth.clients import ClientRegistry
from deputy.oauth.errors import InvalidClient, InvalidRequest
from deputy.storage.clients import Client


async def authenticate_client(request: Request, form: Mapping[str, str], registry: ClientRegistry) -> Client:
    basic = _basic_credentials(request.headers.get("authorization"))
    secret: str | None
    posted_secret = form.get("client_secret")
    if basic is not None and (posted_secret is not None or form.get("client_assertion")):
        raise InvalidRequest("use exactly one client authentication method")
    if basic is not None:
        client_id, secret = basic
        method = "client_secret_basic"
        if form.get("client_id") not in (None, client_id):
            raise InvalidRequest("client_id in the body differs from the authenticated client")
    else:
        client_id = form.get("client_id") or ""
        secret = posted_secret
        method = "client_secret_post" if secret is not None else "none"
    if not client_id:
        raise InvalidClient("client authentication failed")
    client = await registry.find(client_id)
    if client is None or not client.is_active:
        raise InvalidClient("client authentication failed")
    if client.token_endpoint_auth_method != method:
        raise InvalidClient(f"this client must authenticate with {client.token_endpoint_auth_method}")
    if method != "none" and (secret is None or not client.verify_secret(secret)):
        raise InvalidClient("client authentication failed")
    return client


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
