"""Who Deputy is at an upstream's authorization server (MCP 2026-07-28 "Client Registration"), in the
specification's order of preference:

1. a client the operator registered there (``[servers.NAME.oauth] client_id``, with ``client_secret`` or
   ``private_key``; MCP "Preregistration"), presented only to the authorization server it was registered at
   (``authorization_server``, required with it at load): the upstream's protected resource metadata names the
   authorization server, and an upstream that names another (RFC 9728 §7.6; changed by its owner or by whoever took
   it over) must not receive the operator's ``client_id`` and secret in a token request. Any other issuer, or none
   pinned, is refused (``authorization_server_not_allowed``) before anything is sent;
2. Deputy's own Client ID Metadata Document (draft-ietf-oauth-client-id-metadata-document): its https URL is the
   ``client_id``, when the authorization server advertises ``client_id_metadata_document_supported`` and
   ``authorization_response_iss_parameter_supported`` (RFC 9207) and Deputy's public URL is https
   (``is_valid_client_metadata_url``, the SDK's). The document (:meth:`Registration.metadata_document`) lists every
   server's redirect URI and asks for no secret (``none``): the URL identifies Deputy at every server alike, so
   only ``iss`` tells one server's answer from another's (RFC 9700 §4.4.2; without it, registration below, else
   refused);
3. RFC 7591 dynamic registration at the ``registration_endpoint``: ``application_type`` ``web`` (Deputy is a
   server), the authorization code and refresh token grants, and the strongest token endpoint authentication the
   server lists of ``client_secret_basic``, ``client_secret_post``, ``none`` (RFC 8414 §2: unlisted means basic).
   It is registered with the server's own redirect URI (:mod:`.redirect_uris`, RFC 9700 §4.4.2), and kept per
   (server, issuer) with that URI through :class:`RegisteredClients` and reused — one registered with another
   redirect URI (the shared one of older versions) is registered again, never used; a client registered at
   one issuer is never presented to another (SEP-2352: after the upstream moves to another authorization server,
   Deputy registers again there).

Refresh and revocation (:meth:`Registration.client_of`) use the client a connection was made with while it is kept:
no authorization response is involved there, so RFC 9700 §4.4's mix-up does not arise.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from pydantic import ValidationError

from deputy.config import UpstreamServer
from deputy.connections.errors import ConnectionFailed, shown
from deputy.connections.model import UpstreamClient, UpstreamProtection
from deputy.connections.redirect_uris import RedirectUris
from deputy.connections.sdk_auth import is_valid_client_metadata_url, issuers_match, registered_client
from deputy.connections.upstream_http import UpstreamHttp, UpstreamHttpError

# Strongest first; private_key_jwt needs a key registered in advance, so it is the configured client's only.
REGISTRATION_AUTH_METHODS = ("client_secret_basic", "client_secret_post", "none")
GRANT_TYPES = ["authorization_code", "refresh_token"]
MAX_CLIENT_ID = 1024


class RegisteredClients(Protocol):
    """Where clients Deputy registered (RFC 7591) are kept, per (server, issuer); secrets in plain text here (the
    implementation seals them)."""

    async def registered(self, server: str, issuer: str, redirect_uri: str | None) -> UpstreamClient | None:
        """The client kept for (server, issuer) if it was registered with ``redirect_uri`` (None: whichever it was
        registered with); None otherwise (one registered with another redirect URI — the shared one of older
        versions — is registered again)."""
        ...

    async def remember(self, server: str, issuer: str, client: UpstreamClient, redirect_uri: str) -> None: ...


class Registration:
    def __init__(self, http: UpstreamHttp, store: RegisteredClients, *, redirect_uris: RedirectUris,
                 metadata_document_url: str | None, client_name: str = "Deputy") -> None:
        self.http = http
        self.store = store
        self.redirect_uris = redirect_uris
        self.metadata_document_url = metadata_document_url  # None: Deputy's public URL is not https
        self.client_name = client_name

    async def client(self, server: UpstreamServer, protection: UpstreamProtection) -> UpstreamClient:
        """Configured client, else Deputy's client ID metadata document where ``iss`` is sent (RFC 9207), else
        RFC 7591 registration with the server's own redirect URI."""
        oauth = server.oauth
        authorization_server = protection.authorization_server
        if oauth is not None and oauth.client_id is not None:
            # Discovery already refuses another issuer; this holds whatever handed us ``protection``.
            pinned = oauth.authorization_server
            if pinned is None or not issuers_match(authorization_server.issuer, pinned):
                where = f"is registered at {pinned}" if pinned else "names no authorization_server"
                raise ConnectionFailed(server.name, "authorization_server_not_allowed",
                                       f"the configured client {where}; it is not presented to "
                                       f"{shown(authorization_server.issuer)}")
            return UpstreamClient(oauth.client_id, oauth.client_secret, oauth.client_auth, "configured")
        document = authorization_server.client_id_metadata_document_supported and \
            is_valid_client_metadata_url(self.metadata_document_url)
        if document and authorization_server.iss_parameter_supported:
            return UpstreamClient(str(self.metadata_document_url), None, "none", "metadata_document")
        if document and authorization_server.registration_endpoint is None:
            # The document is Deputy at every server and lists every redirect URI: without iss, another server's
            # answer could not be told from this one's (RFC 9700 §4.4.2). Nothing else to be here: refused.
            raise ConnectionFailed(server.name, "registration_failed",
                                   f"{authorization_server.issuer} takes client ID metadata documents but does not "
                                   f"send iss (RFC 9207 authorization_response_iss_parameter_supported), which Deputy "
                                   f"needs to use its document safely, and offers no dynamic registration: enable "
                                   f"RFC 9207 there, or register a client and configure it ([servers.{server.name}."
                                   f"oauth] client_id and authorization_server)")
        issuer = authorization_server.issuer
        redirect_uri = self.redirect_uris.of(server)
        kept = await self.store.registered(server.name, issuer, redirect_uri)
        if kept is not None:
            return kept
        client = await self._register(server, protection, redirect_uri)
        await self.store.remember(server.name, issuer, client, redirect_uri)
        return client

    async def client_of(self, server: UpstreamServer, protection: UpstreamProtection, client_id: str
                        ) -> UpstreamClient:
        """The client a connection was made with, for its refresh and revocation: no authorization response is
        involved there (no mix-up), so a client registered with an older redirect URI, or the metadata document
        where ``iss`` is no longer sent, still serves the tokens it got. When it is gone (a configured client, or
        registered again since), the one :meth:`client` gives."""
        oauth = server.oauth
        if oauth is None or oauth.client_id is None:
            authorization_server = protection.authorization_server
            if client_id == self.metadata_document_url and is_valid_client_metadata_url(client_id) and \
                    authorization_server.client_id_metadata_document_supported:
                return UpstreamClient(client_id, None, "none", "metadata_document")
            kept = await self.store.registered(server.name, authorization_server.issuer, None)
            if kept is not None and kept.client_id == client_id:
                return kept
        return await self.client(server, protection)

    def metadata_document(self, servers: Iterable[UpstreamServer]) -> dict[str, object]:
        """Deputy's client ID metadata document (served at ``metadata_document_url``): every server's own redirect
        URI, for those without a configured client."""
        return {"client_id": self.metadata_document_url, "client_name": self.client_name,
                "redirect_uris": self.redirect_uris.listed(servers), "grant_types": GRANT_TYPES,
                "response_types": ["code"], "token_endpoint_auth_method": "none", "application_type": "web"}

    async def _register(self, server: UpstreamServer, protection: UpstreamProtection, redirect_uri: str
                        ) -> UpstreamClient:
        """RFC 7591 §3.1, §3.2.1."""
        authorization_server = protection.authorization_server
        endpoint = authorization_server.registration_endpoint
        if endpoint is None:
            raise ConnectionFailed(server.name, "registration_failed",
                                   f"{authorization_server.issuer} offers no dynamic registration and no client is "
                                   f"configured for it (set [servers.{server.name}.oauth] client_id)")
        offered = authorization_server.token_endpoint_auth_methods
        method = next((m for m in REGISTRATION_AUTH_METHODS if m in offered), None)
        if method is None:
            raise ConnectionFailed(server.name, "no_client_authentication",
                                   f"{authorization_server.issuer} accepts none of "
                                   f"{', '.join(REGISTRATION_AUTH_METHODS)} at its token endpoint")
        request: dict[str, object] = {
            "client_name": self.client_name, "redirect_uris": [redirect_uri], "grant_types": GRANT_TYPES,
            "response_types": ["code"], "token_endpoint_auth_method": method, "application_type": "web"}
        # RFC 7591 §2 "scope": what the client may ever ask for, not this connection's scopes — a client registered
        # with the first challenge's scopes could never be granted a step-up's (an AS may hold it to them). So every
        # scope the server lists, with the ones wanted now; when it lists none, none is named and its default holds.
        listed = authorization_server.scopes_supported
        if listed:
            request["scope"] = " ".join(dict.fromkeys((*(protection.scopes or ()), *listed)))
        try:
            answer = await self.http.post_json(server, endpoint, request)
        except UpstreamHttpError as exc:
            raise ConnectionFailed(server.name, "registration_failed", exc.message) from None
        if answer.status not in (200, 201) or not isinstance(answer.document, dict):
            error = answer.document.get("error") if isinstance(answer.document, dict) else None
            raise ConnectionFailed(server.name, "registration_failed",
                                   f"the registration endpoint answered HTTP {answer.status}",
                                   error=error if isinstance(error, str) else None)
        try:
            registered = registered_client(answer.document)
        except ValidationError:
            raise ConnectionFailed(server.name, "registration_failed",
                                   "the registration response is not RFC 7591 client information") from None
        if not registered.client_id or len(registered.client_id) > MAX_CLIENT_ID:
            raise ConnectionFailed(server.name, "registration_failed", "the registration response has no client_id")
        # RFC 7591 §3.2.1: the server may change what was asked; what it answers is what holds.
        granted = registered.token_endpoint_auth_method or (method if registered.client_secret else "none")
        if granted not in REGISTRATION_AUTH_METHODS:
            raise ConnectionFailed(server.name, "no_client_authentication",
                                   f"the client was registered for {shown(granted)}, which Deputy does not use")
        if granted != "none" and not registered.client_secret:
            raise ConnectionFailed(server.name, "registration_failed",
                                   f"the client was registered for {granted} but given no client_secret")
        return UpstreamClient(registered.client_id, registered.client_secret if granted != "none" else None,
                              granted, "registered")
