"""DNS rebinding protection for the MCP endpoint (MCP transports, Streamable HTTP "Security Warning").

A page on an attacker's domain that rebinds its name to Deputy's address reaches
Deputy with its own ``Host`` and ``Origin``. Deputy is the origin server for its
clients, so it checks both against its public URL (plus any origins the operator
allows for browser-based clients) and answers 403 before anything else happens.
Upstreams never see the client's ``Origin``: Deputy has already decided on it.
The CORS answers for those same origins (:mod:`deputy.cors`) and the pages' CSRF checks use the same
:func:`deputy.origins.serialized_origin`, so they never disagree on what an allowed origin is.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

from deputy.origins import serialized_origin


class OriginCheck:
    def __init__(self, public_url: str, allowed_origins: Iterable[str] = ()) -> None:
        self.hosts = frozenset({urlsplit(public_url).netloc.lower().encode()})
        # A configured default port is left out, as browsers leave it out; a URL with no readable origin ("") must
        # never make an empty ``Origin`` header an allowed one.
        serialized = (serialized_origin(url) for url in (public_url, *allowed_origins))
        self.origins = frozenset(origin.encode() for origin in serialized if origin)

    def allows(self, host: bytes | None, origin: bytes | None) -> bool:
        if host is None or host.strip().lower() not in self.hosts:
            return False
        return origin is None or origin.strip().lower() in self.origins
