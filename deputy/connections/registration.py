"""STUB (issue 15, helper H1 replaces this file): who Deputy is at an upstream's authorization server."""

from __future__ import annotations

from typing import Protocol

from deputy.config import UpstreamServer
from deputy.connections.model import UpstreamClient, UpstreamProtection
from deputy.connections.upstream_http import UpstreamHttp


class RegisteredClients(Protocol):
    """Where clients Deputy registered (RFC 7591) are kept, per (server, issuer); secrets in plain text here (the
    implementation seals them)."""

    async def registered(self, server: str, issuer: str) -> UpstreamClient | None: ...

    async def remember(self, server: str, issuer: str, client: UpstreamClient) -> None: ...


class Registration:
    def __init__(self, http: UpstreamHttp, store: RegisteredClients, *, redirect_uri: str,
                 metadata_document_url: str | None, client_name: str = "Deputy") -> None:
        self.http = http
        self.store = store
        self.redirect_uri = redirect_uri
        self.metadata_document_url = metadata_document_url  # None: Deputy's public URL is not https
        self.client_name = client_name

    async def client(self, server: UpstreamServer, protection: UpstreamProtection) -> UpstreamClient:
        """Configured client, else Deputy's client ID metadata document, else RFC 7591 registration."""
        raise NotImplementedError

    def metadata_document(self) -> dict[str, object]:
        """Deputy's client ID metadata document (served at ``metadata_document_url``)."""
        raise NotImplementedError
