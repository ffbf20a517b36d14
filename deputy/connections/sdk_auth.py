"""The MCP SDK's client-side OAuth helpers Deputy uses, imported from the SDK on first use.

Importing any ``mcp`` module runs the SDK's package ``__init__``, which builds every protocol model (pydantic) of
every supported protocol version: about 30 MB of a serving process's memory and a second of CPU at each start of
every ``deputy`` command. These helpers are needed only when a user connects an upstream that asks for OAuth
(MCP "Authorization", SEP-985 discovery, SEP-2350 scope step-up, RFC 8414 §3.3 issuer comparison, client ID
metadata documents) — never on the ``tools/call`` path and never by most commands — so each wrapper imports the
SDK inside itself: the SDK's own code stays the one definition, and only a process that uses it pays for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple


def union_scopes(previous_scope: str | None, new_scope: str | None) -> str | None:
    """Two space-delimited scope strings merged, in order, without duplicates (SEP-2350 step-up)."""
    from mcp.client.auth.utils import union_scopes as sdk_union_scopes

    return sdk_union_scopes(previous_scope, new_scope)


def issuers_match(a: str, b: str) -> bool:
    """RFC 8414 §3.3 issuer comparison: exact, except a root issuer with and without its trailing slash."""
    from mcp.client.auth.utils import issuers_match as sdk_issuers_match

    return sdk_issuers_match(a, b)


def is_valid_client_metadata_url(url: str | None) -> bool:
    """Whether ``url`` may be a client ID metadata document's URL (https, a path other than ``/``)."""
    from mcp.client.auth.utils import is_valid_client_metadata_url as sdk_is_valid

    return sdk_is_valid(url)


def protected_resource_metadata_urls(www_auth_url: str | None, server_url: str) -> list[str]:
    """Where to look for an upstream's RFC 9728 metadata, in order (SEP-985)."""
    from mcp.client.auth.utils import build_protected_resource_metadata_discovery_urls

    return build_protected_resource_metadata_discovery_urls(www_auth_url, server_url)


def authorization_server_metadata_urls(auth_server_url: str | None, server_url: str) -> list[str]:
    """Where to look for an authorization server's RFC 8414 / OpenID Connect metadata, in order."""
    from mcp.client.auth.utils import build_oauth_authorization_server_metadata_discovery_urls

    return build_oauth_authorization_server_metadata_discovery_urls(auth_server_url, server_url)


class RegisteredClient(NamedTuple):
    """The fields Deputy reads of an RFC 7591 §3.2.1 registration response."""

    client_id: str | None
    client_secret: str | None
    token_endpoint_auth_method: str | None


def registered_client(document: Mapping[str, Any]) -> RegisteredClient:
    """An RFC 7591 registration response read as the SDK reads it; raises pydantic's ``ValidationError``."""
    from mcp.shared.auth import OAuthClientInformationFull

    parsed = OAuthClientInformationFull.model_validate(document)
    return RegisteredClient(parsed.client_id, parsed.client_secret, parsed.token_endpoint_auth_method)
