"""The client registry: who a ``client_id`` is, and whether Deputy serves it yet.

Every endpoint asks here, so trust is decided in one place (MCP 2026-07-28
"Client Registration Approaches": pre-registered → client ID metadata document →
dynamic registration). A client that is ``pending`` awaits an admin's approval and
is not served; a ``denied`` one never is.
"""

from __future__ import annotations

from deputy.storage.clients import Client, ClientRepository


class ClientRegistry:
    def __init__(self, clients: ClientRepository) -> None:
        self.clients = clients

    async def find(self, client_id: str) -> Client | None:
        """The client, whatever its status; None when nobody by that id is known."""
        return await self.clients.get(client_id)
