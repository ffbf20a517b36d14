"""Authorization server metadata (RFC 8414 §2, §3).

Served at ``/.well-known/oauth-authorization-server`` only; ``issuer`` is the public URL
exactly (RFC 8414 §3.3: the client compares it as a string). It advertises only what is
served.

Deputy is not an OpenID Provider: it issues no ID tokens and refuses ``scope=openid``
(no server defines that scope). An OpenID Connect Discovery 1.0 document (§3) cannot say
so and stay valid — it REQUIRES ``id_token_signing_alg_values_supported`` and
``subject_types_supported``, and its ``scopes_supported`` MUST include ``openid`` — so
``/.well-known/openid-configuration`` is not served (404) and none of those fields appear
here. The MCP authorization spec asks for either discovery document, and its clients try
RFC 8414 first.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from deputy.config import Settings
from deputy.oauth.client_assertions import ADVERTISED_ALGORITHMS as ASSERTION_ALGORITHMS
from deputy.oauth.client_auth import METHODS as CLIENT_AUTH_METHODS
from deputy.oauth.grants.jwt_bearer import GRANT_PROFILE_ID_JAG
from deputy.oauth.token import GRANTS


def authorization_server_metadata(settings: Settings) -> dict[str, Any]:
    issuer = settings.issuer
    document: dict[str, Any] = {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/authorize",
        "token_endpoint": f"{issuer}/token",
        "jwks_uri": f"{issuer}/.well-known/jwks.json",
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": sorted(GRANTS),
        "code_challenge_methods_supported": ["S256"],
        "token_endpoint_auth_methods_supported": list(CLIENT_AUTH_METHODS),
        "token_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGORITHMS),
        "revocation_endpoint": f"{issuer}/revoke",
        "revocation_endpoint_auth_methods_supported": list(CLIENT_AUTH_METHODS),
        "revocation_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGORITHMS),
        "introspection_endpoint": f"{issuer}/introspect",
        "introspection_endpoint_auth_methods_supported": [m for m in CLIENT_AUTH_METHODS if m != "none"],
        "introspection_endpoint_auth_signing_alg_values_supported": list(ASSERTION_ALGORITHMS),
        "scopes_supported": list(settings.all_scopes),
        "authorization_response_iss_parameter_supported": True,
        "resource_indicators_supported": True,
    }
    if settings.registration.enabled:
        document["registration_endpoint"] = f"{issuer}/register"
    if any("id_jag" in issuer.purposes for issuer in settings.trusted_issuers):
        # MCP enterprise-managed authorization: ID-JAGs are redeemed with the JWT bearer grant.
        document["authorization_grant_profiles_supported"] = [GRANT_PROFILE_ID_JAG]
    if settings.client_documents.enabled:
        document["client_id_metadata_document_supported"] = True
    return document


class MetadataEndpoint:
    def __init__(self, settings: Settings) -> None:
        self.document = authorization_server_metadata(settings)

    async def handle(self, request: Request) -> JSONResponse:
        return JSONResponse(self.document, headers={"Cache-Control": "public, max-age=300"})
