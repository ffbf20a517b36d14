"""The authorization code grant at the token endpoint (OAuth 2.1 §4.1.3, RFC 7636 §4.6, RFC 8707 §2.2).

A code presented again after it was consumed revokes its grant, and a request
that fails a check (PKCE, redirect URI, resource) revokes it too, so a stolen
code used twice — by the thief or the client — revokes the grant either way.

The code is consumed only after the audit record of the token it buys is durable
(write-ahead, deputy.oauth.grants.issue): if the log cannot be written the answer
is 503 and the code stays usable. Losing the race to consume it (a concurrent
redemption) revokes the grant, so the token recorded but never handed out dies with it.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.responses import Response

from deputy.config import canonical_resource
from deputy.handles import new_handle
from deputy.oauth import pkce
from deputy.oauth.errors import InvalidClient, InvalidGrant, InvalidRequest, InvalidTarget
from deputy.oauth.grants.issue import token_response
from deputy.services import Services
from deputy.storage.clients import Client
from deputy.storage.grants import ClientNotActive, HandleRefused


async def exchange_code(services: Services, form: Mapping[str, str], client: Client) -> Response:
    code, verifier = form.get("code"), form.get("code_verifier")
    redirect_uri, resource = form.get("redirect_uri"), form.get("resource")
    if not code:
        raise InvalidRequest("code is required")
    if not verifier:
        raise InvalidRequest("code_verifier is required (PKCE)")
    try:
        redeemed = await services.grants.load_code(code, client.client_id)
    except HandleRefused as exc:
        raise InvalidGrant(exc.reason) from None
    grant = redeemed.grant
    if not pkce.verifier_matches(verifier, redeemed.code_challenge):
        await services.grants.revoke(grant.grant_id, "pkce_mismatch")
        raise InvalidGrant("code_verifier does not match the code_challenge")
    # OAuth 2.1 §4.1.3: required and identical when the authorization request carried one
    # (an empty stored value means it did not, and then only a registered URI may appear).
    expected = redeemed.redirect_uri
    if (expected and redirect_uri != expected) or (
            not expected and redirect_uri is not None and redirect_uri not in client.redirect_uris):
        await services.grants.revoke(grant.grant_id, "redirect_mismatch")
        raise InvalidGrant("redirect_uri differs from the one in the authorization request")
    if resource is None:
        raise InvalidRequest("resource is required: the URL of the MCP server (RFC 8707)")
    if canonical_resource(resource) != grant.resource:
        await services.grants.revoke(grant.grant_id, "resource_mismatch")
        raise InvalidTarget("resource differs from the one that was authorized")
    refresh = new_handle() if "refresh_token" in client.grant_types else None
    response = await token_response(services, grant, grant.scope, refresh, grant_type="authorization_code")
    try:
        await services.grants.consume_code(code, grant, refresh, services.settings.refresh_token_ttl)
    except ClientNotActive:  # withdrawn since it authenticated: its grants are revoked with it
        raise InvalidClient("this client is no longer served") from None
    except HandleRefused as exc:
        raise InvalidGrant(exc.reason) from None
    return response
