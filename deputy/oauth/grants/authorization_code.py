"""The authorization code grant at the token endpoint (OAuth 2.1 §4.1.3, RFC 7636 §4.6, RFC 8707 §2.2).

The code is consumed before anything else is checked, so a stolen code used
twice — by the thief or the client — revokes the grant either way.
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.responses import Response

from deputy.config import canonical_resource
from deputy.oauth import pkce
from deputy.oauth.errors import InvalidGrant, InvalidRequest, InvalidTarget
from deputy.oauth.grants.issue import token_response
from deputy.services import Services
from deputy.storage.clients import Client
from deputy.storage.grants import HandleRefused


async def exchange_code(services: Services, form: Mapping[str, str], client: Client) -> Response:
    code, verifier = form.get("code"), form.get("code_verifier")
    redirect_uri, resource = form.get("redirect_uri"), form.get("resource")
    if not code:
        raise InvalidRequest("code is required")
    if not verifier:
        raise InvalidRequest("code_verifier is required (PKCE)")
    try:
        redeemed = await services.grants.redeem_code(code, client.client_id)
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
    refresh = None
    if "refresh_token" in client.grant_types:
        refresh = await services.grants.issue_refresh_token(grant.grant_id, services.settings.refresh_token_ttl)
    return await token_response(services, grant, grant.scope, refresh, grant_type="authorization_code")
