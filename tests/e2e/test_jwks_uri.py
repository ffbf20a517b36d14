"""A `private_key_jwt` agent whose keys live at its `jwks_uri`: fetched safely, and rotation just works.

The agent is a client ID metadata document client (its id is its document's URL) with
`grant_types = ["client_credentials"]`; its document and its JWK Set are served over HTTPS
on loopback (the test CA, Deputy in development mode).
"""

from __future__ import annotations

import httpx
import pytest
from joserfc.jwk import ECKey

from tests.support.agents import assertion
from tests.support.deputy_process import RunningDeputy
from tests.support.document_server import DocumentServer

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@pytest.fixture(scope="module")
def deputy(documents_deputy: RunningDeputy) -> RunningDeputy:
    return documents_deputy


def _publish(docs: DocumentServer, *keys: ECKey) -> str:
    return docs.serve("/agent-keys.json", {"keys": [k.as_dict(private=False) for k in keys]},
                      content_type="application/jwk-set+json", headers={"Cache-Control": "no-store"})


async def _token(deputy: RunningDeputy, client_id: str, key: ECKey) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.post(f"{deputy.url}/token", data={
            "grant_type": "client_credentials", "resource": deputy.resource("demo"),
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion(deputy, client_id, key=key, alg="ES256")})


async def test_keys_from_jwks_uri_authenticate_and_rotate(deputy: RunningDeputy, docs: DocumentServer) -> None:
    first = ECKey.generate_key("P-256", parameters={"kid": "first"}, private=True)
    second = ECKey.generate_key("P-256", parameters={"kid": "second"}, private=True)
    stranger = ECKey.generate_key("P-256", parameters={"kid": "stranger"}, private=True)
    keys_url = _publish(docs, first)
    client_id = docs.serve_document(
        f"/agent-{deputy.url.rsplit(':', 1)[1]}.json", token_endpoint_auth_method="private_key_jwt",
        jwks_uri=keys_url, grant_types=["client_credentials"], client_name="Keys-at-a-URL agent")

    issued = await _token(deputy, client_id, first)
    assert issued.status_code == 200, issued.text
    assert issued.json()["token_type"] == "Bearer"

    refused = await _token(deputy, client_id, stranger)
    assert refused.status_code == 401
    assert refused.json()["error"] == "invalid_client"

    _publish(docs, second)  # the agent rotates: only the new key is published now
    rotated = await _token(deputy, client_id, second)
    assert rotated.status_code == 200, rotated.text
    retired = await _token(deputy, client_id, first)
    assert retired.status_code == 401, "a key no longer published no longer authenticates"


async def test_unreachable_jwks_uri_is_invalid_client(deputy: RunningDeputy, docs: DocumentServer) -> None:
    key = ECKey.generate_key("P-256", private=True)
    client_id = docs.serve_document(
        f"/lost-keys-{deputy.url.rsplit(':', 1)[1]}.json", token_endpoint_auth_method="private_key_jwt",
        jwks_uri=docs.url("/nothing-here.json"), grant_types=["client_credentials"])
    response = await _token(deputy, client_id, key)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
