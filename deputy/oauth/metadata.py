"""Authorization server metadata (RFC 8414 §2, §3; OpenID Connect Discovery 1.0 §3).

The same document is served at ``/.well-known/oauth-authorization-server`` and
``/.well-known/openid-configuration``; ``issuer`` is the public URL exactly
(RFC 8414 §3.3: the client compares it as a string).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from deputy.config import Settings
from deputy.keys import ALGORITHM
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
        # OIDC Discovery requires these three; Deputy issues no ID tokens, but clients parse them.
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [ALGORITHM],
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
