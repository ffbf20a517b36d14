"""Issue 12, finding 1: the discovery documents claim only what Deputy serves.

Deputy issues no ID tokens and refuses ``scope=openid``. An OpenID Connect Discovery 1.0
document (§3) REQUIRES ``id_token_signing_alg_values_supported`` and
``subject_types_supported`` and its ``scopes_supported`` MUST include ``openid``, so no valid
one can describe Deputy: ``/.well-known/openid-configuration`` is not served, and the RFC 8414
document carries none of the OpenID Provider fields.
"""

from __future__ import annotations

import httpx
import pytest

from tests.support.deputy_process import RunningDeputy
from tests.support.oauth_flow import authorize

# OpenID Connect Discovery 1.0 §3 fields that only an OpenID Provider (an ID-token issuer) can claim.
OPENID_PROVIDER_FIELDS = (
    "id_token_signing_alg_values_supported", "id_token_encryption_alg_values_supported",
    "id_token_encryption_enc_values_supported", "subject_types_supported", "userinfo_endpoint",
    "userinfo_signing_alg_values_supported", "claims_supported", "claims_parameter_supported",
    "acr_values_supported", "request_object_signing_alg_values_supported", "end_session_endpoint",
)


async def test_scope_openid_is_refused(deputy: RunningDeputy) -> None:
    """What the documents must not contradict: ``scope=openid`` → invalid_scope at the client."""
    flow = await authorize(deputy, scope="openid demo:tools")
    assert flow.redirect is not None and flow.redirect.error == "invalid_scope"


async def test_no_openid_configuration_is_served(deputy: RunningDeputy) -> None:
    """Issue 12: no OpenID discovery document at all, since a valid one would claim ID tokens."""
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{deputy.url}/.well-known/openid-configuration")
    assert response.status_code == 404


@pytest.mark.parametrize("field", OPENID_PROVIDER_FIELDS)
async def test_metadata_claims_no_openid_provider_feature(deputy: RunningDeputy, field: str) -> None:
    """Issue 12: the RFC 8414 document names no ID-token algorithm or any other OpenID Provider feature."""
    async with httpx.AsyncClient() as http:
        document = (await http.get(f"{deputy.url}/.well-known/oauth-authorization-server")).json()
    assert field not in document
    assert "openid" not in document["scopes_supported"]
    assert document["response_types_supported"] == ["code"], "no id_token response types"
