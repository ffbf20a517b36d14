"""The values the parts of :mod:`deputy.connections` hand each other; no behaviour lives here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from deputy.policy.user_attributes import UserAttributes

ClientSource = Literal["configured", "metadata_document", "registered"]
ConnectionStatus = Literal["active", "broken"]


@dataclass(frozen=True, slots=True)
class AuthorizationServer:
    """An upstream's authorization server, as its RFC 8414 (or OpenID Discovery) metadata describes it."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    registration_endpoint: str | None = None
    revocation_endpoint: str | None = None
    # As advertised; RFC 8414 §2: absent means client_secret_basic only.
    token_endpoint_auth_methods: tuple[str, ...] = ("client_secret_basic",)
    scopes_supported: tuple[str, ...] | None = None
    iss_parameter_supported: bool = False  # RFC 9207 §3 authorization_response_iss_parameter_supported
    client_id_metadata_document_supported: bool = False


@dataclass(frozen=True, slots=True)
class UpstreamProtection:
    """What discovery found for one upstream MCP server: the resource, its authorization server, the scopes to ask."""

    resource: str  # the protected resource metadata's ``resource``: sent as ``resource`` (RFC 8707)
    authorization_server: AuthorizationServer
    # From the challenge, else the metadata's scopes_supported, else None (the ``scope`` parameter is left out).
    scopes: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class UpstreamClient:
    """Deputy's identity at one authorization server."""

    client_id: str
    client_secret: str | None
    auth_method: str  # none | client_secret_basic | client_secret_post | private_key_jwt
    source: ClientSource


@dataclass(frozen=True, slots=True)
class UpstreamTokens:
    """A token response (RFC 6749 §5.1), checked; ``expires_at`` is absolute (seconds), None when not given."""

    access_token: str
    refresh_token: str | None
    expires_at: int | None
    scope: str | None


@dataclass(frozen=True, slots=True)
class PendingConnection:
    """A connection started in a browser, waiting for the authorization server's callback.

    Kept server-side keyed by the SHA-256 of ``state``, bound to the user and to the browser that started it, used
    once."""

    state: str
    code_verifier: str
    server: str  # Deputy's name for the upstream
    user_id: str
    issuer: str
    client_id: str
    redirect_uri: str
    resource: str
    scope: str | None
    expires_at: int


@dataclass(frozen=True, slots=True)
class ConnectionNeeded:
    """A call that cannot go upstream until the user (re)connects her account: where to send her, and why."""

    server: str
    connect_url: str
    reason: Literal["not_connected", "broken", "insufficient_scope"]
    message: str


@dataclass(frozen=True, slots=True)
class ConnectionSummary:
    """One user's connection to one upstream, as pages and the CLI show it (never a token)."""

    user_id: str
    server: str
    status: ConnectionStatus
    issuer: str
    scope: str | None
    created_at: int
    refreshed_at: int | None
    expires_at: int | None


class CallMaker(Protocol):
    """Whom a call is made for, as far as connections care (the gateway's ``Principal`` is one): the user whose
    connection is used — for an agent acting for Alice, Alice — and what the token says of her."""

    @property
    def user(self) -> str: ...

    @property
    def user_attributes(self) -> UserAttributes: ...
