"""Connecting a user's account at an upstream: the authorization code flow's two ends, as Deputy's pages drive them.

:meth:`ConnectFlow.start` discovers the upstream's authorization server, gets Deputy's client there, and keeps the
pending connection server-side, keyed by the SHA-256 of ``state`` and bound to the user and to the browser that
started it (RFC 6749 §10.12, RFC 9700 §4.7.1). :meth:`ConnectFlow.finish` takes that pending connection once
(a replayed ``state`` finds nothing) and only for the same browser and the same signed-in user: a callback opened
in another user's browser, or after another user signed in, connects nobody and stores nothing. It must also have
arrived at its flow's redirect URI, which is the one its server uses now (RFC 9700 §4.4.2, :mod:`.redirect_uris`):
an answer at upstream X's callback for a flow of upstream Y — another authorization server's code, sent on with Y's
``state`` (mix-up) — is refused (``wrong_callback``) before anything is redeemed, and so is a flow started before
Deputy gave each server its own redirect URI (it is started again). The code is
redeemed (PKCE, ``resource`` RFC 8707, ``iss`` RFC 9207: :mod:`.authorization`), the tokens are sealed, each bound
to its user, server and field, and ``connection.created`` records a digest of the access token, never the token.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from deputy import clock
from deputy.config import UpstreamServer
from deputy.connections.errors import ConnectionFailed
from deputy.connections.model import PendingConnection, UpstreamTokens
from deputy.connections.parts import Parts
from deputy.connections.refresh import TokenKeeper, token_digest
from deputy.connections.sdk_auth import union_scopes
from deputy.storage.connections import StoredConnection, token_context


class ConnectFlow:
    def __init__(self, parts: Parts, keeper: TokenKeeper) -> None:
        self.parts = parts
        self.keeper = keeper

    def server(self, name: str) -> UpstreamServer:
        server = self.parts.settings.servers.get(name)
        if server is None or server.credentials != "oauth":
            raise ConnectionFailed(name, "discovery_failed", "no server of that name is configured with "
                                   "credentials = \"oauth\"")
        return server

    async def start(self, server_name: str, user_id: str, browser: str) -> str:
        server = self.server(server_name)
        # A connection is made rarely and must follow where the upstream says it is protected now (an upstream that
        # moved to another authorization server): discovered afresh, not from what calls cached.
        self.parts.discovery.forget(server.name)
        kept = await self.parts.store.get(user_id, server.name)
        # Step-up (SEP-2350): what a 403 insufficient_scope asked for, with what was granted.
        wanted = kept.wanted_scope if kept is not None else None
        protection = await self.parts.discovery.protection(server, scope_challenge=wanted)
        client = await self.parts.registration.client(server, protection)
        base = " ".join(protection.scopes) if protection.scopes else None
        ttl = self.parts.settings.connections.flow_ttl
        url, pending = self.parts.authorization.start(server, protection, client, user_id=user_id,
                                                      scope=union_scopes(base, wanted), ttl=ttl, now=clock.now())
        await self.parts.store.add_flow(pending.state, browser, user_id, server.name,
                                        dataclasses.asdict(pending), pending.expires_at)
        return url

    async def finish(self, query: Mapping[str, str], user_id: str | None, browser: str | None,
                     callback: str | None) -> str:
        """``callback``: the server name of the callback it arrived at (``/connect/callback/NAME``); None for the
        shared ``/connect/callback``."""
        state = query.get("state")
        if not state:
            raise ConnectionFailed("?", "state_unknown", "the answer carries no state")
        taken = await self.parts.store.take_flow(state, browser)
        if taken == "unknown":
            raise ConnectionFailed("?", "state_unknown", "no connection waits for this answer (used already, "
                                   "expired, or never started here)")
        if taken == "foreign":
            raise ConnectionFailed("?", "state_foreign", "this answer belongs to a connection started in another "
                                   "browser")
        if user_id is None or user_id != taken.user_id:
            # Taken and dropped: the user who started it starts again; nobody's account is connected to hers.
            raise ConnectionFailed(taken.server, "state_foreign", "this connection was started by another user")
        pending = PendingConnection(**taken.pending)
        server = self.server(pending.server)
        redirect_uris = self.parts.authorization.redirect_uris
        arrived = redirect_uris.callback(callback)
        if not (pending.redirect_uri == arrived == redirect_uris.of(server)):
            # Taken and dropped, nothing redeemed: another server's answer carrying this flow's state (mix-up), or a
            # flow started with the redirect URI an older version used for every server.
            # The path it arrived at is the sender's to choose: not repeated on the page or in the log.
            raise ConnectionFailed(server.name, "wrong_callback",
                                   f"this answer did not arrive at {server.name}'s redirect URI "
                                   f"{redirect_uris.of(server)}: not believed (another authorization server's "
                                   f"answer?); start connecting again")
        protection = await self.parts.discovery.protection(server)
        client = await self.parts.registration.client(server, protection)
        # redeem checks iss (RFC 9207), that the issuer and client are still those the flow started with, error.
        tokens = await self.parts.authorization.redeem(server, protection, client, pending, query)
        stored = await self.parts.store.put(self._sealed(pending, tokens))
        self.keeper.forget(pending.user_id, server.name)
        await self.parts.record("connection.created", user=pending.user_id, server=server.name,
                                issuer=pending.issuer, client_id=pending.client_id, resource=pending.resource,
                                scope=stored.scope, token_sha256=stored.token_digest,
                                refresh_token=tokens.refresh_token is not None, expires_at=tokens.expires_at)
        return server.name

    def _sealed(self, pending: PendingConnection, tokens: UpstreamTokens) -> StoredConnection:
        vault = self.parts.vault_or_fail(pending.server)
        user, server = pending.user_id, pending.server
        return StoredConnection(
            user_id=user, server=server, status="active", issuer=pending.issuer, client_id=pending.client_id,
            scope=tokens.scope or pending.scope, wanted_scope=None,
            access_token=vault.seal(tokens.access_token, token_context(user, server, "access_token")),
            refresh_token=(vault.seal(tokens.refresh_token, token_context(user, server, "refresh_token"))
                           if tokens.refresh_token is not None else None),
            expires_at=tokens.expires_at, created_at=clock.now(), refreshed_at=None,
            token_digest=token_digest(tokens.access_token))
