"""Clients identified by a URL: Client ID Metadata Documents (MCP 2026-07-28 "Client ID Metadata Documents").

When a ``client_id`` is an https URL, the client's metadata is the JSON document
served at that URL (OAuth Client ID Metadata Document draft §3-§4). Deputy:

- checks the URL (draft §3: https, a path, no fragment, no user info, no ``.`` or
  ``..`` segments; at most 255 characters, the width of the ``client_id`` column);
- applies the operator's domain policy *before* fetching: a denied domain, or an
  unknown one when unknown domains are refused, is never fetched;
- fetches it with :class:`~deputy.oauth.document_fetcher.DocumentFetcher` (SSRF-safe);
- requires a JSON object whose ``client_id`` equals the URL exactly (simple string
  comparison, draft §4.1), a ``client_name``, non-empty ``redirect_uris`` and, when
  given, a ``token_endpoint_auth_method`` that needs no shared secret (draft §4.1:
  ``none`` or ``private_key_jwt`` with ``jwks``/``jwks_uri``; there is nowhere a secret
  could have come from);
- caches the validated document in process per ``Cache-Control``/``Expires``
  (draft §4.3), clamped to the configured bounds;
- records the client (source ``document``) so an administrator can see, approve
  or deny it; the status stored is the administrator's and survives re-fetches,
  while redirect URIs and the rest always come from the (cached) document.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import SplitResult, urlsplit

from deputy.client_trust import ClientDocumentPolicy
from deputy.clock import now, wall
from deputy.config import TOKEN_EXCHANGE
from deputy.oauth.document_fetcher import (
    DocumentFetcher,
    FetchedDocument,
    FetchRefused,
    is_loopback_host,
)
from deputy.oauth.errors import InvalidRedirectUri
from deputy.oauth.redirect_uris import APPLICATION_TYPES, check_redirect_uris, refuse_deputy_host
from deputy.storage.clients import Client, ClientRepository

log = logging.getLogger(__name__)
# The one reason a client is told when its document could not be fetched, whatever the cause.
NOT_FETCHED = "it could not be fetched"

MAX_CLIENT_ID_LENGTH = 255
MAX_CACHED = 1024
SECRET_METHODS = ("client_secret_basic", "client_secret_post", "client_secret_jwt")
GRANTS = ("authorization_code", "refresh_token")


class ClientDocumentRefused(Exception):
    """The URL client_id cannot be used; the message says why (shown to the user, logged in full)."""


@dataclass(frozen=True, slots=True)
class ClientDocument:
    client_id: str
    client_name: str
    redirect_uris: tuple[str, ...]
    grant_types: tuple[str, ...]
    token_endpoint_auth_method: str
    application_type: str
    jwks: Mapping[str, Any] | None
    jwks_uri: str | None
    metadata: Mapping[str, Any]


def is_document_client_id(client_id: str, development_mode: bool) -> bool:
    """Whether ``client_id`` names a metadata document (https, or loopback http in development mode)."""
    if client_id.startswith("https://"):
        return True
    if development_mode and client_id.startswith("http://"):
        host = urlsplit(client_id).hostname
        return host is not None and is_loopback_host(host)
    return False


def check_client_id_url(client_id: str, development_mode: bool) -> SplitResult:
    if len(client_id) > MAX_CLIENT_ID_LENGTH:
        raise ClientDocumentRefused(f"a client_id URL may be at most {MAX_CLIENT_ID_LENGTH} characters")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in client_id):
        raise ClientDocumentRefused("the client_id URL contains whitespace or control characters")
    parts = urlsplit(client_id)
    if parts.scheme != "https" and not (development_mode and parts.scheme == "http" and parts.hostname
                                        and is_loopback_host(parts.hostname)):
        raise ClientDocumentRefused("a client_id URL must use https")
    if not parts.hostname:
        raise ClientDocumentRefused("the client_id URL has no host")
    if "#" in client_id:
        raise ClientDocumentRefused("a client_id URL must not contain a fragment")
    if "@" in parts.netloc:
        raise ClientDocumentRefused("a client_id URL must not contain a user name or password")
    if parts.path in ("", "/"):
        raise ClientDocumentRefused("a client_id URL must have a path")
    if any(segment in (".", "..") for segment in parts.path.split("/")):
        raise ClientDocumentRefused("a client_id URL must not contain . or .. path segments")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise ClientDocumentRefused("the client_id URL has a malformed port") from None
    return parts


def _strings(value: Any, key: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ClientDocumentRefused(f"{key} must be a list of non-empty strings")
    return tuple(value)


def parse_document(value: Any, client_id: str, deputy_url: str | None = None) -> ClientDocument:
    """Validate a fetched document against the URL it came from (draft §4.1).

    With ``deputy_url``, a redirect URI on Deputy's own host is refused (it would receive Deputy's cookies)."""
    if not isinstance(value, dict):
        raise ClientDocumentRefused("the metadata document is not a JSON object")
    if value.get("client_id") != client_id:
        raise ClientDocumentRefused(
            f"the document's client_id {value.get('client_id')!r} is not exactly its URL {client_id!r}")
    name = value.get("client_name")
    if not isinstance(name, str) or not name.strip():
        raise ClientDocumentRefused("the document has no client_name")
    if "redirect_uris" not in value:
        raise ClientDocumentRefused("the document has no redirect_uris")
    # RFC 7591 default; "native" admits https, loopback http and private-use schemes, "web" https only.
    application_type = value.get("application_type", "native")
    if application_type not in APPLICATION_TYPES:
        raise ClientDocumentRefused(f"application_type must be one of {', '.join(APPLICATION_TYPES)}")
    try:
        redirect_uris = tuple(check_redirect_uris(value["redirect_uris"], application_type))
        if deputy_url is not None:
            refuse_deputy_host(redirect_uris, deputy_url)
    except InvalidRedirectUri as exc:
        raise ClientDocumentRefused(f"redirect_uris: {exc.description}") from None
    if "client_secret" in value or "client_secret_expires_at" in value:
        raise ClientDocumentRefused("a metadata document must not carry a client_secret")
    method = value.get("token_endpoint_auth_method", "none")
    jwks = value.get("jwks")
    jwks_uri = value.get("jwks_uri")
    if method in SECRET_METHODS:
        raise ClientDocumentRefused(f"token_endpoint_auth_method {method} needs a shared secret, which a "
                                    "metadata document client cannot have; use none or private_key_jwt")
    if method == "private_key_jwt":
        if (jwks is None) == (jwks_uri is None):
            raise ClientDocumentRefused("private_key_jwt needs exactly one of jwks or jwks_uri")
        if jwks is not None and not (isinstance(jwks, dict) and isinstance(jwks.get("keys"), list) and jwks["keys"]):
            raise ClientDocumentRefused("jwks must be a JWK Set with at least one key")
        if jwks_uri is not None and not (isinstance(jwks_uri, str) and jwks_uri.startswith("https://")):
            raise ClientDocumentRefused("jwks_uri must be an https URL")
    elif method == "none":
        jwks = jwks_uri = None
    else:
        raise ClientDocumentRefused(f"token_endpoint_auth_method {method!r} is not supported")
    grant_types = _strings(value.get("grant_types", ["authorization_code"]), "grant_types")
    # An agent acting as itself, or for others, must prove it with a key: only with private_key_jwt.
    allowed = {*GRANTS, "client_credentials", TOKEN_EXCHANGE} if method == "private_key_jwt" else set(GRANTS)
    unsupported = sorted(set(grant_types) - allowed)
    if unsupported:
        raise ClientDocumentRefused(f"grant_types not available to metadata document clients: {unsupported}")
    return ClientDocument(
        client_id=client_id,
        client_name=name.strip()[:200],
        redirect_uris=redirect_uris,
        grant_types=tuple(dict.fromkeys(grant_types)),
        token_endpoint_auth_method=method,
        application_type=application_type,
        jwks=jwks,
        jwks_uri=jwks_uri,
        metadata=value,
    )


def cache_lifetime(fetched: FetchedDocument, low: int, high: int, now: float) -> float:
    """Seconds to keep a document: ``Cache-Control`` first, then ``Expires`` (RFC 9111 §4.2.1), clamped."""
    lifetime = 0.0
    directives = [d.strip().lower() for d in (fetched.cache_control or "").split(",") if d.strip()]
    max_age = [d.split("=", 1)[1].strip('" ') for d in directives if d.startswith("max-age=")]
    if "no-store" in directives or "no-cache" in directives:
        lifetime = 0.0
    elif max_age:
        try:
            lifetime = float(int(max_age[0]))
        except ValueError:
            lifetime = 0.0
    elif fetched.expires:
        try:
            expires = parsedate_to_datetime(fetched.expires).timestamp()
            date = parsedate_to_datetime(fetched.date).timestamp() if fetched.date else now
            lifetime = expires - date
        except (TypeError, ValueError, IndexError, OverflowError):
            lifetime = 0.0  # an invalid Expires means already expired (RFC 9111 §5.3)
    return min(max(lifetime, float(low)), float(high))


class ClientDocumentResolver:
    """Resolves URL client ids to clients: domain policy, fetch, validation, cache, the stored row."""

    def __init__(self, policy: ClientDocumentPolicy, clients: ClientRepository, fetcher: DocumentFetcher,
                 clock: Callable[[], float] = time.monotonic, deputy_url: str | None = None) -> None:
        self.policy = policy
        self.deputy_url = deputy_url
        self.clients = clients
        self.fetcher = fetcher
        self.clock = clock
        self._cache: dict[str, tuple[float, ClientDocument]] = {}

    @classmethod
    def from_policy(cls, policy: ClientDocumentPolicy, clients: ClientRepository,
                    deputy_url: str | None = None) -> ClientDocumentResolver:
        fetcher = DocumentFetcher(max_bytes=policy.max_bytes, timeout_seconds=policy.timeout_seconds,
                                  development_mode=policy.development_mode, ca_file=policy.ca_file)
        return cls(policy, clients, fetcher, deputy_url=deputy_url)

    def handles(self, client_id: str) -> bool:
        return self.policy.enabled and is_document_client_id(client_id, self.policy.development_mode)

    async def resolve(self, client_id: str) -> Client:
        """The client the document describes, with the status the policy and the administrator give it.

        Raises ClientDocumentRefused when the URL, the domain, the fetch or the document is refused.
        """
        parts = check_client_id_url(client_id, self.policy.development_mode)
        stored = await self.clients.get(client_id)
        if stored is not None and stored.source != "document":
            return stored  # configured or registered under this id by the operator: that wins
        host = parts.hostname or ""
        verdict = self.policy.domain_verdict(host)
        if verdict == "denied":
            raise ClientDocumentRefused(f"clients from {host} are refused by this server")
        if verdict == "unknown" and self.policy.unknown_domains == "refuse":
            raise ClientDocumentRefused(f"{host} is not a domain this server accepts clients from")
        if stored is not None and stored.status == "denied":
            return stored  # an administrator said no; nothing to fetch
        document = await self._document(client_id)
        # An allowed domain is served at once; an unknown one waits for (or keeps) the administrator's word.
        status = "active" if verdict == "allowed" else (stored.status if stored is not None else "pending")
        return await self._record(document, stored, status)

    async def _document(self, client_id: str) -> ClientDocument:
        now = self.clock()
        cached = self._cache.get(client_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            fetched = await self.fetcher.fetch(client_id)
        except FetchRefused as exc:
            # Whoever chose the URL learns only that it failed: which addresses a name resolves to, or why a
            # resolver or a connection failed, would map the network from outside. The operator gets the details.
            log.info("client document %s not fetched (%s): %s", client_id, exc.reason, exc.message)
            raise ClientDocumentRefused(NOT_FETCHED) from None
        try:
            document = parse_document(fetched.value, client_id, self.deputy_url)
        except ClientDocumentRefused as exc:
            log.warning("client document %s refused: %s", client_id, exc)
            raise
        lifetime = cache_lifetime(fetched, self.policy.cache_min_seconds, self.policy.cache_max_seconds,
                                  wall())
        if lifetime > 0:
            self._cache.pop(client_id, None)
            while len(self._cache) >= MAX_CACHED:
                self._cache.pop(next(iter(self._cache)))
            self._cache[client_id] = (now + lifetime, document)
        return document

    async def _record(self, document: ClientDocument, stored: Client | None, status: str) -> Client:
        client = Client(
            client_id=document.client_id,
            client_name=document.client_name,
            redirect_uris=document.redirect_uris,
            grant_types=document.grant_types,
            token_endpoint_auth_method=document.token_endpoint_auth_method,
            application_type=document.application_type,
            source="document",
            created_at=stored.created_at if stored is not None else now(),
            status=status,
            jwks=document.jwks,
            jwks_uri=document.jwks_uri,
            client_metadata=document.metadata,
        )
        if stored is None:
            log.info("client document %s recorded as %s", client.client_id, status)
            return await self.clients.insert(client)
        # The stored row is the administrator's view (and the status they set); the document's
        # content is re-applied when it changes (an UPDATE, so nothing else of the row is lost).
        if _differs(stored, client):
            await self.clients.replace(client)
        return client


def _differs(stored: Client, client: Client) -> bool:
    fields = ("client_name", "redirect_uris", "grant_types", "token_endpoint_auth_method", "application_type",
              "status", "jwks", "jwks_uri", "client_metadata")
    return any(getattr(stored, f) != getattr(client, f) for f in fields)
