"""DNS rebinding protection for the MCP endpoint (MCP transports, Streamable HTTP "Security Warning").

A page on an attacker's domain that rebinds its name to Deputy's address reaches
Deputy with its own ``Host`` and ``Origin``. Deputy is the origin server for its
clients, so it checks both against its public URL (plus any origins the operator
allows for browser-based clients) and answers 403 before anything else happens.
Upstreams never see the client's ``Origin``: Deputy has already decided on it.
The CORS answers for those same origins (:mod:`deputy.cors`) use the same
:func:`serialized_origin`, so the two never disagree on what an allowed origin is.
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}


def serialized_origin(url: str) -> str:
    """The origin of ``url`` as a browser writes it in ``Origin`` (RFC 6454 §6.1): lower-case scheme and host, the
    port only when it is not the scheme's default; "" when ``url`` has no readable port. (The pages' CSRF check has
    the same rule, ``deputy.web.csrf.origin_of``, a layer above the gateway.)"""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        return ""
    return f"{scheme}://{host}" if port is None or port == _DEFAULT_PORTS.get(scheme) else f"{scheme}://{host}:{port}"


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
