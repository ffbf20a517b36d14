"""What a token is for, as the request asks: one server (RFC 8707 §2) and scopes within it (RFC 6749 §3.3).

Shared by the grants that take ``resource`` and ``scope`` from the token request itself
(client credentials, jwt-bearer), and the scope rule by token exchange: never wider.
"""

from __future__ import annotations

from collections.abc import Mapping, Set

from deputy.config import Settings, UpstreamServer
from deputy.oauth.errors import InvalidRequest, InvalidScope, InvalidTarget


def requested_server(settings: Settings, form: Mapping[str, str]) -> UpstreamServer:
    """The server ``resource`` names (required)."""
    resource = form.get("resource")
    if not resource:
        raise InvalidRequest("resource is required: the URL of the MCP server (RFC 8707)")
    server = settings.server_for_resource(resource)
    if server is None:
        raise InvalidTarget("resource is not a server this authorization server protects "
                            "(an absolute URI without a fragment)")
    return server


def granted_scope(form: Mapping[str, str], server: UpstreamServer, granted: Set[str] | None = None) -> str:
    """Requested ∩ granted ∩ the server's scopes, never wider; without a request, what was granted — or, when
    nothing in particular was (``granted`` None), the server's required scopes."""
    available = set(server.scopes) if granted is None else set(granted) & set(server.scopes)
    if form.get("scope"):
        requested = set(form["scope"].split())
        wider = requested - available
        if wider:
            raise InvalidScope(f"not available for {server.name}: {' '.join(sorted(wider))}")
        available = requested
    elif granted is None:
        available = set(server.required_scopes)
    if not available:
        raise InvalidScope("no scope of this server is available")
    return " ".join(sorted(available))
