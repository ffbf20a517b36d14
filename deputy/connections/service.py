"""Each user's connections to ``credentials = "oauth"`` upstreams: what the gateway asks for each call, what the
pages and the CLI do with them.

- :meth:`Connections.headers_for`: the ``Authorization`` header carrying *her* upstream token — the user the
  token names, also when an agent acts for her (RFC 8693 delegation: the subject's connection, never the actor's);
  never the client's token (MCP: Token Passthrough). A token naming no Deputy user (client credentials, a workload)
  has no connection to use. Refreshed first when near expiry, once however many calls race (:mod:`.refresh`).
- :meth:`Connections.refused`: the upstream's ``401`` (RFC 6750 §3.1 ``invalid_token``: refresh once, else the
  connection is broken) and ``403 insufficient_scope`` (step-up: the next connect asks for the union of the granted
  and the challenged scopes).
- :meth:`Connections.start` / :meth:`Connections.finish`: the connect flow the pages drive (:mod:`.connect_flow`),
  each upstream with its own redirect URI (RFC 9700 §4.4.2 mix-up: :mod:`.redirect_uris`).
- :meth:`Connections.disconnect` / :meth:`Connections.disconnect_user`: delete first, so nothing is half-kept if
  the upstream cannot be reached, then revoke at the upstream (RFC 7009 §2: the refresh token, which revokes its
  access tokens where the server links them, then the access token); a failed revocation is logged, not fatal.

Every change is an audit record (``connection.created``, ``connection.refreshed``, ``connection.broken``,
``connection.revoked``) holding at most a token's SHA-256.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Literal, cast

from sqlalchemy.ext.asyncio import AsyncEngine

from deputy.audit.log import AuditLog
from deputy.config import Settings, UpstreamServer
from deputy.connections.authorization import AuthorizationClient
from deputy.connections.connect_flow import ConnectFlow
from deputy.connections.discovery import Discovery
from deputy.connections.errors import ConnectionFailed
from deputy.connections.model import CallMaker, ConnectionNeeded, ConnectionStatus, ConnectionSummary
from deputy.connections.parts import Parts, SealedClients
from deputy.connections.redirect_uris import RedirectUris
from deputy.connections.refresh import Broken, Missing, Row, TokenKeeper, token_digest
from deputy.connections.registration import Registration
from deputy.connections.sdk_auth import union_scopes
from deputy.connections.upstream_http import UpstreamHttp, parse_challenge
from deputy.connections.vault import Vault
from deputy.page_paths import CLIENT_METADATA_DOCUMENT, CONNECT_PAGE
from deputy.policy.user_attributes import NO_IDP
from deputy.storage.connections import ConnectionRepository

log = logging.getLogger(__name__)

Headers = Sequence[tuple[str, str]]

NeededReason = Literal["not_connected", "broken", "insufficient_scope"]
MESSAGES: dict[NeededReason, str] = {
    "not_connected": "Connect your account at {title} to use it through Deputy: {url}",
    "broken": "Your connection to {title} no longer works; connect your account again: {url}",
    "insufficient_scope": "{title} needs more access than you granted; connect your account again to grant it: {url}",
}


class Connections:
    """What the gateway asks for each call, and what the pages and the CLI do with connections."""

    def __init__(self, parts: Parts) -> None:
        self.parts = parts
        self.keeper = TokenKeeper(parts)
        self.flow = ConnectFlow(parts, self.keeper)

    @classmethod
    def open(cls, settings: Settings, engine: AsyncEngine, audit: AuditLog) -> Connections:
        """Built once per process by :class:`deputy.services.Services`; opens the vault — only when some server has
        ``credentials = "oauth"``, so no key file is made otherwise — which raises on a key it cannot use."""
        oauth = any(server.credentials == "oauth" for server in settings.servers.values())
        vault = Vault.open(settings.data_dir, settings.connections.vault_key) if oauth else None
        store = ConnectionRepository(engine)
        http = UpstreamHttp(development_mode=settings.client_documents.development_mode,
                            ca_file=settings.client_documents.ca_file)
        redirect_uris = RedirectUris(settings.public_url)
        # A client ID metadata document is a URL the authorization server fetches: only an https one is served.
        document = settings.public_url + CLIENT_METADATA_DOCUMENT if settings.public_url.startswith("https://") \
            else None
        parts = Parts(settings=settings, store=store, audit=audit, vault=vault, discovery=Discovery(http),
                      registration=Registration(http, SealedClients(store, vault), redirect_uris=redirect_uris,
                                                metadata_document_url=document),
                      authorization=AuthorizationClient(http, redirect_uris))
        return cls(parts)

    def oauth_servers(self) -> Mapping[str, UpstreamServer]:
        """The servers configured with ``credentials = "oauth"``."""
        return {name: s for name, s in self.parts.settings.servers.items() if s.credentials == "oauth"}

    def metadata_document(self) -> dict[str, object] | None:
        """Deputy's client ID metadata document; None when Deputy's public URL is not https (none is served)."""
        if self.parts.registration.metadata_document_url is None:
            return None
        return self.parts.registration.metadata_document(self.oauth_servers().values())

    async def close(self) -> None:
        return None

    def connect_url(self, server: str) -> str:
        return self.parts.settings.public_url + CONNECT_PAGE + server

    def needed(self, server: UpstreamServer, reason: NeededReason) -> ConnectionNeeded:
        url = self.connect_url(server.name)
        message = MESSAGES[reason].format(title=server.title or server.name, url=url)
        return ConnectionNeeded(server=server.name, connect_url=url, reason=reason, message=message)

    async def headers_for(self, server: UpstreamServer, principal: CallMaker) -> Headers | ConnectionNeeded:
        """The ``Authorization`` header for a call for ``principal.user``, refreshed first when near expiry (single
        flight); :class:`ConnectionNeeded` when she has no usable connection. Raises :class:`ConnectionFailed`
        when her connection exists but cannot be used now (authorization server unreachable and the token expired,
        the vault key): the call is not forwarded."""
        if principal.user_attributes.idp == NO_IDP:
            url = self.connect_url(server.name)
            return ConnectionNeeded(server=server.name, connect_url=url, reason="not_connected", message=(
                f"{server.title or server.name} is called with a user's own account: this token names no Deputy "
                f"user (client credentials?); a user must connect her account at {url} and the call be made for "
                f"her"))
        try:
            return await self.keeper.headers(server, principal.user)
        except Missing:
            return self.needed(server, "not_connected")
        except Broken:
            return self.needed(server, "broken")

    async def refused(self, server: UpstreamServer, principal: CallMaker, status: int,
                      www_authenticate: str | None, sent: str | None = None) -> ConnectionNeeded | None:
        """The upstream answered 401 or 403 to her token: refresh (401; None means retry once with new headers from
        :meth:`headers_for`), mark broken, or ask for more scope (403 ``insufficient_scope``, step-up).

        A 401 for the token a 401's refresh just gave breaks the connection rather than refreshing in a loop. A 403
        without ``insufficient_scope`` refuses the call, not her credential: None, and nothing changes."""
        user = principal.user
        if status == 403:
            challenge = parse_challenge(www_authenticate)
            if challenge.error != "insufficient_scope":
                return None  # a refusal of the call, not of her credential: nothing to change
            row = await self.parts.store.get(user, server.name)
            if row is None:
                return self.needed(server, "not_connected")
            if challenge.scope and set(challenge.scope.split()) <= set((row.scope or "").split()):
                # She already granted every scope it asks for: connecting again would grant nothing new and loop
                # (MCP "Scope Selection": a client bounds its step-up retries). The call's refusal it is.
                return None
            # SEP-2350: the next connect asks for the granted scopes and the challenged ones.
            wanted = union_scopes(union_scopes(row.scope, row.wanted_scope), challenge.scope)
            if wanted != row.scope:
                await self.parts.store.set_wanted_scope(user, server.name, wanted)
            return self.needed(server, "insufficient_scope")
        if status != 401:
            return None
        # The token the refused request carried (``sent``): with calls in flight at once, what this process hands out
        # now may already be the one another call's refusal refreshed to, and taking that for the refused one would
        # break a connection that works.
        refused_token = token_digest(sent) if sent is not None else self.keeper.handed_out(user, server.name)
        self.keeper.forget(user, server.name)
        row = await self.parts.store.get(user, server.name)
        if row is None:
            return self.needed(server, "not_connected")
        if row.status != "active":
            return self.needed(server, "broken")
        # Not handed out by this process lately: the stored token is the one refused.
        refused_token = refused_token or row.token_digest
        try:
            if self.keeper.got_by_refusal(user, server.name) == refused_token:
                # The token a refusal's refresh just gave is refused too: refreshing again would loop.
                await self.keeper.break_now(row, "refreshed_token_refused")
            await self.keeper.refreshed(server, user, refused_sha256=refused_token)
        except Missing:
            return self.needed(server, "not_connected")
        except Broken:
            return self.needed(server, "broken")
        return None

    async def start(self, server_name: str, user_id: str, browser: str) -> str:
        """Start connecting ``user_id`` to ``server_name`` in the browser holding cookie value ``browser``; the
        upstream authorization URL to redirect to. Raises ConnectionFailed."""
        return await self.flow.start(server_name, user_id, browser)

    async def finish(self, query: Mapping[str, str], user_id: str | None, browser: str | None,
                     callback: str | None) -> str:
        """The callback at ``/connect/callback/NAME`` (``callback`` NAME; None: the shared ``/connect/callback``):
        bind the tokens to the user who started it (same user, same browser, its own callback: RFC 9700 §4.4.2);
        the server's name. Raises ConnectionFailed."""
        return await self.flow.finish(query, user_id, browser, callback)

    async def list(self, user_id: str | None = None, server: str | None = None) -> list[ConnectionSummary]:
        return [ConnectionSummary(user_id=row.user_id, server=row.server, status=cast(ConnectionStatus, row.status),
                                  issuer=row.issuer, scope=row.scope, created_at=row.created_at,
                                  refreshed_at=row.refreshed_at, expires_at=row.expires_at)
                for row in await self.parts.store.list(user_id, server)]

    async def disconnect(self, user_id: str, server: str, reason: str) -> bool:
        """Revoke at the upstream (RFC 7009 when offered), delete from the vault, record it; False if none."""
        row = await self.parts.store.delete(user_id, server)
        self.keeper.forget(user_id, server)
        if row is None:
            return False
        await self._revoked(row, reason)
        return True

    async def disconnect_user(self, user_id: str, reason: str) -> int:
        """Every connection of ``user_id`` (disabled, or her consent revoked); how many."""
        rows = await self.parts.store.delete_for_user(user_id)
        self.keeper.forget(user_id)
        for row in rows:
            await self._revoked(row, reason)
        return len(rows)

    async def _revoked(self, row: Row, reason: str) -> None:
        """After the row is gone: revoke its tokens at the upstream, then record it (which ones it revoked)."""
        revoked = await self._revoke_upstream(row)
        await self.parts.record("connection.revoked", user=row.user_id, server=row.server, issuer=row.issuer,
                                reason=reason, token_sha256=row.token_digest, upstream_revoked=list(revoked))

    async def _revoke_upstream(self, row: Row) -> tuple[str, ...]:
        """RFC 7009 §2.1 for each token, the refresh token first (revoking it ends the grant at servers that link
        the two, RFC 7009 §2.1); each failure is logged and the next tried. The kinds revoked."""
        server = self.oauth_servers().get(row.server)
        if server is None:
            log.warning("connection of user %s to %s deleted; not revoked at the upstream: the server is no longer "
                        "configured with credentials = \"oauth\"", row.user_id, row.server)
            return ()
        try:
            protection = await self.parts.discovery.protection(server)
            if protection.authorization_server.issuer != row.issuer:
                # Never hand its tokens to another authorization server than the one that issued them.
                raise ConnectionFailed(row.server, "issuer_mismatch", "the upstream now names another "
                                       "authorization server than the one that issued the tokens")
            client = await self.parts.registration.client_of(server, protection, row.client_id)
        except ConnectionFailed as exc:
            log.warning("connection of user %s to %s deleted; its tokens not revoked at the upstream: %s",
                        row.user_id, row.server, exc)
            return ()
        revoked: tuple[str, ...] = ()
        kinds = ("refresh_token", "access_token") if row.refresh_token is not None else ("access_token",)
        for kind in kinds:
            try:
                await self.parts.authorization.revoke(server, protection, client, self.keeper.open(row, kind), kind)
            except ConnectionFailed as exc:
                # An authorization server may refuse to revoke a self-contained (JWT) access token
                # (RFC 7009 §2.2.1 unsupported_token_type); it then lives until it expires.
                log.warning("connection of user %s to %s deleted; revoking its %s at the upstream failed: %s",
                            row.user_id, row.server, kind, exc)
                continue
            revoked += (kind,)
        return revoked
