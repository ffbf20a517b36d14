"""The parts a user's connections are made of, built once by :meth:`deputy.connections.service.Connections.open`
and shared by the refresh (:mod:`.refresh`) and the connect flow (:mod:`.connect_flow`); and where Deputy's
registered clients are kept, their secrets sealed (:class:`SealedClients`), each with the redirect URI it was
registered with (RFC 9700 §4.4.2: a client registered with another one is registered again)."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

from deputy import clock
from deputy.audit.log import AuditLog, AuditUnavailable
from deputy.audit.records import new_record
from deputy.config import Settings
from deputy.connections.authorization import AuthorizationClient
from deputy.connections.discovery import Discovery
from deputy.connections.errors import ConnectionFailed
from deputy.connections.model import UpstreamClient
from deputy.connections.registration import Registration
from deputy.connections.vault import Vault, VaultKeyError
from deputy.storage.connections import ConnectionRepository, StoredClient, client_secret_context

log = logging.getLogger(__name__)

REGISTERED_FOR = "registered@"  # + the redirect URI's digest, in the row's ``source`` (32 characters at most)


def registered_source(redirect_uri: str) -> str:
    """The ``source`` a client registered with ``redirect_uri`` is stored with. Rows of older versions say
    ``registered`` (registered with the shared redirect URI): no redirect URI matches them, so they are replaced."""
    return REGISTERED_FOR + hashlib.sha256(redirect_uri.encode()).hexdigest()[:32 - len(REGISTERED_FOR)]


@dataclass(slots=True)
class Parts:
    settings: Settings
    store: ConnectionRepository
    audit: AuditLog
    vault: Vault | None  # None: no server has credentials = "oauth" (no key file made)
    discovery: Discovery
    registration: Registration
    authorization: AuthorizationClient

    def vault_or_fail(self, server: str) -> Vault:
        if self.vault is None:
            raise ConnectionFailed(server, "vault_key", "no vault is open: no server has credentials = \"oauth\"")
        return self.vault

    async def record(self, record_type: str, **fields: Any) -> None:
        """Append a ``connection.*`` record. What it records has happened (and stays so): a record that cannot be
        made durable is an error for the operator's log, not a reason to undo it."""
        try:
            await self.audit.append(new_record(record_type, **fields))
        except AuditUnavailable as exc:
            log.error("%s of user %s to %s not recorded: %s", record_type, fields.get("user"), fields.get("server"),
                      exc)


class SealedClients:
    """:class:`deputy.connections.registration.RegisteredClients` over the repository: the secret sealed, bound
    to its (server, issuer)."""

    def __init__(self, store: ConnectionRepository, vault: Vault | None) -> None:
        self.store = store
        self.vault = vault

    async def registered(self, server: str, issuer: str, redirect_uri: str | None) -> UpstreamClient | None:
        kept = await self.store.registered_client(server, issuer)
        if kept is None:
            return None
        if redirect_uri is None:
            if kept.source != "registered" and not kept.source.startswith(REGISTERED_FOR):
                return None
        elif kept.source != registered_source(redirect_uri):
            return None
        secret = None
        if kept.client_secret is not None:
            if self.vault is None:
                return None
            try:
                secret = self.vault.unseal(kept.client_secret, client_secret_context(server, issuer))
            except VaultKeyError:
                log.error("Deputy's client secret at %s (for %s) does not open with the vault's key", issuer, server)
                raise ConnectionFailed(server, "vault_key", "Deputy's stored client secret does not open with the "
                                       "vault key") from None
        return UpstreamClient(kept.client_id, secret, kept.auth_method, "registered")

    async def remember(self, server: str, issuer: str, client: UpstreamClient, redirect_uri: str) -> None:
        sealed = None
        if client.client_secret is not None:
            if self.vault is None:
                raise ConnectionFailed(server, "vault_key", "no vault is open to keep a client secret in")
            sealed = self.vault.seal(client.client_secret, client_secret_context(server, issuer))
        await self.store.put_registered_client(StoredClient(
            server=server, issuer=issuer, client_id=client.client_id, client_secret=sealed,
            auth_method=client.auth_method, source=registered_source(redirect_uri), registered_at=clock.now()))
