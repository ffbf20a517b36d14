"""OAuth 2.0 Protected Resource Metadata (RFC 9728 §2, §3) for each protected server.

Served path-inserted at ``/.well-known/oauth-protected-resource/mcp/NAME``
(RFC 9728 §3.1) and, when exactly one server is configured, also at the root
well-known URI. ``scopes_supported`` is the minimal set for basic use (MCP
authorization, "Scope Selection Strategy").
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from deputy.config import Settings, UpstreamServer

WELL_KNOWN = "/.well-known/oauth-protected-resource"


def metadata_url(settings: Settings, server: UpstreamServer) -> str:
    return f"{settings.public_url}{WELL_KNOWN}/mcp/{server.name}"


def protected_resource_metadata(settings: Settings, server: UpstreamServer) -> dict[str, Any]:
    return {
        "resource": server.resource,
        "authorization_servers": [settings.issuer],
        "scopes_supported": list(server.required_scopes),
        "bearer_methods_supported": ["header"],
        "resource_name": server.title,
    }


class ResourceMetadataEndpoint:
    def __init__(self, settings: Settings) -> None:
        self.documents = {name: protected_resource_metadata(settings, s) for name, s in settings.servers.items()}
        self.only = next(iter(self.documents.values())) if len(self.documents) == 1 else None

    async def handle(self, request: Request) -> Response:
        name = request.path_params.get("name")
        document = self.documents.get(name) if name is not None else self.only
        if document is None:
            return JSONResponse({"error": "not_found"}, status_code=404)
        return JSONResponse(document, headers={"Cache-Control": "public, max-age=300"})
