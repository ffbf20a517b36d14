"""The refresh token grant with rotation and reuse detection (OAuth 2.1 §4.3, RFC 9700 §4.14.2).

A refresh token is used once; its successor is returned with the new access
token. Presenting a used one revokes the whole family (its grant), including
the access tokens already out, because one of the two holders is an attacker.
``scope`` may only narrow (OAuth 2.1 §4.3.1); ``resource`` may only repeat the
granted one (RFC 8707 §2.2).

The token is used only after the audit record of its successor's issue is
durable (write-ahead, deputy.oauth.grants.issue): a refused request or an audit
log that cannot be written (503) leaves it usable.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.responses import Response

from deputy.config import canonical_resource
from deputy.handles import new_handle
from deputy.oauth.errors import InvalidClient, InvalidGrant, InvalidRequest, InvalidScope, InvalidTarget
from deputy.oauth.grants.issue import token_response
from deputy.services import Services
from deputy.storage.clients import Client
from deputy.storage.grants import ClientNotActive, HandleRefused


async def refresh(services: Services, form: Mapping[str, str], client: Client) -> Response:
    token = form.get("refresh_token")
    if not token:
        raise InvalidRequest("refresh_token is required")
    resource = form.get("resource")
    requested = set(form["scope"].split()) if form.get("scope") else None

    try:
        grant = await services.grants.load_refresh_token(token, client.client_id)
    except HandleRefused as exc:
        raise InvalidGrant(exc.reason) from None
    if resource is not None and canonical_resource(resource) != grant.resource:
        raise InvalidTarget("a refresh token is bound to the resource it was issued for")
    if requested is not None and not requested <= set(grant.scope.split()):
        raise InvalidScope("a refresh may only narrow the granted scope")
    scope = " ".join(sorted(requested)) if requested is not None else grant.scope
    successor = new_handle()
    response = await token_response(services, grant, scope, successor, grant_type="refresh_token")
    try:
        await services.grants.use_refresh_token(token, grant, successor, services.settings.refresh_token_ttl)
    except ClientNotActive:  # withdrawn since it authenticated: the family is revoked with it
        raise InvalidClient("this client is no longer served") from None
    except HandleRefused as exc:
        raise InvalidGrant(exc.reason) from None
    return response
