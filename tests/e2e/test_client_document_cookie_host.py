"""A client metadata document may not name a redirect URI on Deputy's own host (issue 11, finding 2).

The browser would send Deputy's cookies to it (cookies are per host, not per port, RFC 6265
§8.5). The document is refused when it is read, so no client row is recorded; the sign-in
is an error page, never a redirect (RFC 6749 §4.1.2.1).
"""

from __future__ import annotations

import asyncio

import pytest

from tests.support.deputy_process import RunningDeputy
from tests.support.document_server import DocumentServer
from tests.support.oauth_flow import authorize
from tests.support.sdk_client import free_port, page_text


@pytest.fixture(scope="module")
def deputy(documents_deputy: RunningDeputy) -> RunningDeputy:
    return documents_deputy


async def test_a_document_with_a_redirect_uri_on_deputys_host_is_refused(
        deputy: RunningDeputy, docs: DocumentServer) -> None:
    on_deputys_host = f"http://127.0.0.1:{free_port()}/callback"
    url = docs.serve_document("/clients/deputy-host.json", client_name="Listens on Deputy's host",
                              redirect_uris=["http://localhost:9/callback", on_deputys_host])
    auth = await authorize(deputy, client_id=url, redirect_uri=on_deputys_host)
    assert auth.redirect is None and auth.page is not None and auth.page.status_code == 400
    text = page_text(auth.page.text)
    assert "redirect_uris" in text and "cookies" in text and "localhost" in text, text
    shown = await asyncio.to_thread(deputy.cli, "clients", "show", url)
    assert shown.returncode == 1, "the refused document left no client behind"
