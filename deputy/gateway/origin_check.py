"""DNS rebinding protection for the MCP endpoint (MCP transports, Streamable HTTP "Security Warning").

A page on an attacker's domain that rebinds its name to Deputy's address reaches
Deputy with its own ``Host`` and ``Origin``. Deputy is the origin server for its
clients, so it checks both against its public URL (plus any origins the operator
allows for browser-based clients) and answers 403 before anything else happens.
Upstreams never see the client's ``Origin``: Deputy has already decided on it.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}".lower()


class OriginCheck:
    def __init__(self, public_url: str, allowed_origins: Iterable[str] = ()) -> None:
        self.hosts = frozenset({urlsplit(public_url).netloc.lower().encode()})
        self.origins = frozenset({_origin(public_url).encode(), *(_origin(o).encode() for o in allowed_origins)})

    def allows(self, host: bytes | None, origin: bytes | None) -> bool:
        if host is None or host.strip().lower() not in self.hosts:
            return False
        return origin is None or origin.strip().lower() in self.origins
