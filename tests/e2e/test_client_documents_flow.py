"""A client identified by its metadata document URL, end to end, against a real Deputy.

The test serves the documents over HTTPS on loopback (a throwaway CA that Deputy is told
to trust with ``client_documents.ca_file``, development mode on). 127.0.0.1 is an allowed
domain; ``localhost`` is not, and unknown domains are held for approval.
"""

from __future__ import annotations

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import KeySet
from mcp.shared.auth import OAuthClientMetadata

from tests.support.deputy_process import PASSWORD, RunningDeputy
from tests.support.document_server import DocumentServer
from tests.support.oauth_flow import authorize, exchange
from tests.support.sdk_client import free_port, page_text, sdk_oauth_client

CALLBACK = "http://localhost:9/callback"


@pytest.fixture(scope="module")
def deputy(documents_deputy: RunningDeputy) -> RunningDeputy:
    return documents_deputy


async def test_metadata_advertises_client_id_metadata_documents(deputy: RunningDeputy) -> None:
    async with httpx.AsyncClient() as http:
        metadata = (await http.get(f"{deputy.url}/.well-known/oauth-authorization-server")).json()
    assert metadata["client_id_metadata_document_supported"] is True


async def test_sdk_client_signs_in_with_its_metadata_document(deputy: RunningDeputy, docs: DocumentServer) -> None:
    redirect_uri = f"http://localhost:{free_port()}/callback"
    grants = ["authorization_code", "refresh_token"]
    url = docs.serve_document("/clients/sdk.json", client_name="SDK through a metadata document",
                              redirect_uris=[redirect_uri], grant_types=grants)
    metadata = OAuthClientMetadata(client_name="SDK through a metadata document",
                                   redirect_uris=[redirect_uri],  # type: ignore[list-item]
                                   token_endpoint_auth_method="none", grant_types=grants)
    async with sdk_oauth_client(deputy.resource("demo"), "alice", PASSWORD, redirect_uri=redirect_uri,
                                client_metadata=metadata, client_metadata_url=url) as (client, run):
        result = await client.call_tool("add", {"a": 2, "b": 40})
        assert result.structured_content == {"result": 42}

    assert run.storage.client_info is not None and run.storage.client_info.client_id == url, "no registration"
    assert docs.hits["/clients/sdk.json"] >= 1
    token = run.storage.tokens
    assert token is not None and token.refresh_token
    async with httpx.AsyncClient() as http:
        keys = KeySet.import_key_set((await http.get(f"{deputy.url}/.well-known/jwks.json")).json())
    assert jwt.decode(token.access_token, keys).claims["client_id"] == url
    shown = deputy.cli("clients", "show", url)
    assert shown.returncode == 0 and "document" in shown.stdout, shown.stdout + shown.stderr


async def test_an_unknown_domain_awaits_approval_until_approved(deputy: RunningDeputy, docs: DocumentServer) -> None:
    url = docs.serve_document("/clients/pending.json", host="localhost", redirect_uris=[CALLBACK],
                              grant_types=["authorization_code"])
    waiting = await authorize(deputy, client_id=url, redirect_uri=CALLBACK)
    assert waiting.redirect is None and waiting.page is not None and waiting.page.status_code == 403
    assert "Waiting for approval" in page_text(waiting.page.text)
    refused = await exchange(deputy, "any-code", verifier="v" * 43, client_id=url, redirect_uri=CALLBACK)
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"

    approved = deputy.cli("clients", "approve", url)
    assert approved.returncode == 0, approved.stderr

    auth = await authorize(deputy, client_id=url, redirect_uri=CALLBACK)
    assert auth.redirect is not None and auth.redirect.error is None, auth.page and page_text(auth.page.text)
    response = await exchange(deputy, auth.code, verifier=auth.verifier or "", client_id=url, redirect_uri=CALLBACK)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(("path", "fields", "problem"), [
    ("/clients/slash.json", {"client_id": "/clients/slash.json/"}, "is not exactly its URL"),
    ("/clients/case.json", {"client_id": "/clients/Case.json"}, "is not exactly its URL"),
    ("/clients/secret.json", {"token_endpoint_auth_method": "client_secret_post"}, "needs a shared secret"),
])
async def test_a_refused_document_is_an_unknown_client_everywhere(
        path: str, fields: dict[str, str], problem: str, deputy: RunningDeputy, docs: DocumentServer) -> None:
    url = docs.url(path)
    if "client_id" in fields:
        fields = {"client_id": docs.url(fields["client_id"])}
    docs.serve_document(path, **fields)
    auth = await authorize(deputy, client_id=url, redirect_uri=CALLBACK)
    assert auth.redirect is None, "never redirected while the client is in doubt"
    assert auth.page is not None and auth.page.status_code == 400
    assert problem in page_text(auth.page.text)
    refused = await exchange(deputy, "any-code", verifier="v" * 43, client_id=url, redirect_uri=CALLBACK)
    assert refused.status_code == 401 and refused.json()["error"] == "invalid_client"


async def test_a_redirecting_document_is_refused(deputy: RunningDeputy, docs: DocumentServer) -> None:
    url = docs.serve("/clients/moved.json", b"", status=302, headers={"Location": "https://10.0.0.1/client.json"})
    auth = await authorize(deputy, client_id=url, redirect_uri=CALLBACK)
    assert auth.page is not None and auth.page.status_code == 400
    assert "could not be fetched" in page_text(auth.page.text)  # one generic reason (8d)


async def test_a_redirect_uri_not_in_the_document_is_refused_on_a_page(
        deputy: RunningDeputy, docs: DocumentServer) -> None:
    url = docs.serve_document("/clients/other-redirect.json", redirect_uris=["http://localhost:9/elsewhere"])
    auth = await authorize(deputy, client_id=url, redirect_uri=CALLBACK)
    assert auth.redirect is None and auth.page is not None and auth.page.status_code == 400
    assert "not registered for this client" in page_text(auth.page.text)
