"""The client registry: who a ``client_id`` is, and whether Deputy serves it yet.

Every endpoint asks here, so trust is decided in one place (MCP 2026-07-28
"Client Registration Approaches": pre-registered → client ID metadata document →
dynamic registration). A client that is ``pending`` awaits an admin's approval and
is not served; a ``denied`` one never is. A ``client_id`` that is an https URL is
resolved through its metadata document when the operator enables them
(:mod:`deputy.oauth.client_documents`).
"""

from __future__ import annotations

from deputy.oauth.client_documents import ClientDocumentRefused, ClientDocumentResolver
from deputy.storage.clients import Client, ClientRepository


class UnknownClient(Exception):
    """Nobody by that id can be served; the message says why (safe to show the user)."""


class ClientRegistry:
    def __init__(self, clients: ClientRepository, documents: ClientDocumentResolver | None = None) -> None:
        self.clients = clients
        self.documents = documents

    async def find(self, client_id: str, *, remembered: bool = False) -> Client | None:
        """The client, whatever its status; None when nobody by that id is known.

        ``remembered``: a registered client may come from memory (:meth:`ClientRepository.remembered`), for a
        request whose grant is written with ``confirm=client``, which refuses a copy that is no longer so."""
        try:
            return await self.resolve(client_id, remembered=remembered)
        except UnknownClient:
            return None

    async def resolve(self, client_id: str, *, remembered: bool = False) -> Client:
        """Like :meth:`find`, but a client that cannot be resolved raises UnknownClient saying why."""
        if self.documents is not None and self.documents.handles(client_id):
            try:
                return await self.documents.resolve(client_id)
            except ClientDocumentRefused as exc:
                raise UnknownClient(f"the client's metadata document cannot be used: {exc}") from None
        client = await (self.clients.remembered(client_id) if remembered else self.clients.get(client_id))
        if client is None or (client.source == "document" and self.documents is None):
            # A document client is only as current as its document; with documents off it is not served.
            raise UnknownClient("unknown client_id")
        return client
