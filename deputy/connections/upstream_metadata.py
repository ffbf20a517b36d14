"""Reading what an upstream publishes about its authorization: its protected resource metadata and its
authorization server's metadata, each believed only as far as the MCP specification (2026-07-28, "Authorization
Server Discovery") and the RFCs allow.

Protected resource metadata (RFC 9728 §2, §3.3):

- ``resource`` must name the upstream Deputy is configured with: same scheme and host (case-insensitive, MCP
  "Canonical Server URI"), and the configured URL's path or a parent of it (a server publishing the metadata for
  its origin at the root well-known URL). Any other resource is refused: metadata for another server is not
  believed (RFC 9728 §7.3, mix-up); the value is kept exactly as published, since it is sent back as ``resource``
  (RFC 8707);
- ``authorization_servers`` must list at least one issuer (absolute http(s) URLs).

Authorization server metadata (RFC 8414 §2, §3.3; OpenID Connect Discovery §3, §4.3):

- ``issuer`` must equal the issuer the discovery URL was built from (RFC 8414 §3.3, exact string; only a root
  issuer's trailing slash is forgiven, ``mcp.client.auth.utils.issuers_match``): metadata for another issuer is
  refused before any of its endpoints is used (RFC 9700 §4.4, mix-up);
- ``code_challenge_methods_supported`` must hold ``S256``; absent is a refusal too (MCP: "MUST refuse to proceed"),
  so PKCE (RFC 7636) is known to be checked;
- ``authorization_endpoint`` and ``token_endpoint`` (and the optional registration and revocation endpoints and
  ``jwks_uri``) must be https URLs without a fragment on the issuer's own host or a host the operator trusts (http
  only on loopback): metadata pointing Deputy's requests, and the user's browser, at some other host is refused.

Documents are read as plain JSON, not through ``mcp.shared.auth``'s pydantic models: those re-serialize URLs
(``https://as.example`` becomes ``https://as.example/``) and the values compared and sent back must be the published
strings.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any
from urllib.parse import urlsplit

from deputy.config_servers import canonical_resource
from deputy.connections.errors import ConnectionFailed, DiscoveryProblem, shown
from deputy.connections.model import AuthorizationServer
from deputy.connections.sdk_auth import issuers_match
from deputy.outbound_checked import is_loopback_host

MAX_URL = 2048
MAX_LISTED = 64  # entries of a list read; a longer one is cut (only membership is asked of most)


class MetadataRefused(Exception):
    def __init__(self, reason: DiscoveryProblem, detail: str) -> None:
        super().__init__(detail)
        self.reason: DiscoveryProblem = reason
        self.detail = detail

    def for_server(self, server: str) -> ConnectionFailed:
        return ConnectionFailed(server, self.reason, self.detail)


def resource_matches(published: str, configured: str) -> bool:
    """Whether protected resource metadata for ``published`` speaks for the upstream configured at ``configured``."""
    mine, theirs = urlsplit(canonical_resource(configured)), urlsplit(canonical_resource(published))
    if (theirs.scheme, theirs.netloc) != (mine.scheme, mine.netloc) or theirs.query or theirs.fragment:
        return False
    return theirs.path in ("", mine.path) or mine.path.startswith(theirs.path + "/")


def read_protected_resource(document: Any, server_url: str) -> tuple[str, tuple[str, ...], tuple[str, ...] | None]:
    """RFC 9728 §2: (``resource`` as published, ``authorization_servers``, ``scopes_supported``)."""
    if not isinstance(document, dict):
        raise MetadataRefused("discovery_failed", "the protected resource metadata is not a JSON object")
    resource = document.get("resource")
    if not isinstance(resource, str) or not resource or len(resource) > MAX_URL:
        raise MetadataRefused("discovery_failed", "the protected resource metadata has no resource")
    if not resource_matches(resource, server_url):
        raise MetadataRefused("resource_mismatch", f"the protected resource metadata is for {shown(resource)!r}, "
                                                   f"not for {server_url!r}")
    servers = strings(document, "authorization_servers", None)
    if not servers:
        raise MetadataRefused("discovery_failed", "the protected resource metadata names no authorization server")
    for issuer in servers:
        if urlsplit(issuer).scheme not in ("https", "http") or not urlsplit(issuer).hostname:
            raise MetadataRefused("discovery_failed", f"authorization server {shown(issuer)!r} is not an http(s) URL")
    return resource, servers, strings(document, "scopes_supported", None)


def read_authorization_server(document: Any, issuer: str, trusted_hosts: Collection[str],
                              development_mode: bool = False) -> AuthorizationServer:
    """RFC 8414 §2, §3.3 as the module docstring requires; ``issuer`` is the one the metadata URL was built from."""
    if not isinstance(document, dict):
        raise MetadataRefused("discovery_failed", "the authorization server metadata is not a JSON object")
    published = document.get("issuer")
    if not isinstance(published, str) or not issuers_match(published, issuer):
        raise MetadataRefused("issuer_mismatch", f"the authorization server metadata is for issuer "
                                                 f"{shown(published)!r}, not {issuer!r}")
    if "S256" not in (strings(document, "code_challenge_methods_supported", None) or ()):
        raise MetadataRefused("pkce_unsupported", f"{issuer} does not say it supports PKCE with S256 "
                                                  "(code_challenge_methods_supported)")
    if "code" not in (strings(document, "response_types_supported", None) or ("code",)):
        raise MetadataRefused("discovery_failed", f"{issuer} does not support the authorization code flow")
    host = (urlsplit(published).hostname or "").lower()

    def endpoint(name: str, required: bool) -> str | None:
        value = document.get(name)
        if value is None and not required:
            return None
        return checked_endpoint(value, name, host, trusted_hosts, development_mode)

    endpoint("jwks_uri", False)
    return AuthorizationServer(
        issuer=published,
        authorization_endpoint=str(endpoint("authorization_endpoint", True)),
        token_endpoint=str(endpoint("token_endpoint", True)),
        registration_endpoint=endpoint("registration_endpoint", False),
        revocation_endpoint=endpoint("revocation_endpoint", False),
        # RFC 8414 §2: absent means client_secret_basic.
        token_endpoint_auth_methods=strings(document, "token_endpoint_auth_methods_supported",
                                            ("client_secret_basic",)) or ("client_secret_basic",),
        scopes_supported=strings(document, "scopes_supported", None),
        iss_parameter_supported=document.get("authorization_response_iss_parameter_supported") is True,
        client_id_metadata_document_supported=document.get("client_id_metadata_document_supported") is True,
    )


def checked_endpoint(value: Any, name: str, issuer_host: str, trusted_hosts: Collection[str],
                     development_mode: bool = False) -> str:
    """An endpoint URL the metadata names: absolute, https (http on loopback), no fragment, on the issuer's host
    or a trusted one."""
    try:
        parts = urlsplit(value) if isinstance(value, str) and len(value) <= MAX_URL else None
    except ValueError:
        parts = None
    if parts is None or not parts.hostname or parts.fragment or parts.username is not None:
        raise MetadataRefused("endpoint_refused", f"{name} is missing or not an absolute URL")
    host = parts.hostname.lower()
    if host != issuer_host and host not in trusted_hosts:
        raise MetadataRefused("endpoint_refused", f"{name} is on {shown(host)}, not on the issuer's host "
                                                  f"{issuer_host} or a trusted host")
    loopback_allowed = is_loopback_host(host) and (development_mode or host in trusted_hosts)
    if parts.scheme != "https" and not (parts.scheme == "http" and loopback_allowed):
        raise MetadataRefused("endpoint_refused", f"{name} must be an https URL")
    return str(value)


def strings(document: dict[str, Any], name: str, default: tuple[str, ...] | None) -> tuple[str, ...] | None:
    value = document.get(name)
    if value is None:
        return default
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise MetadataRefused("discovery_failed", f"{name} is not a list of strings")
    return tuple(value[:MAX_LISTED])
