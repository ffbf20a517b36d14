"""The serialised origin of a URL (RFC 6454 §6.1, as a browser writes it in ``Origin``), the one rule the pages' CSRF
check, the gateway's Origin check and CORS compare origins by."""

from __future__ import annotations

from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}


def serialized_origin(url: str) -> str:
    """Lower-case scheme and host (an IPv6 literal in brackets), the port only when it is not the scheme's default;
    "" when ``url`` has no readable port."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        return ""
    return f"{scheme}://{host}" if port is None or port == DEFAULT_PORTS.get(scheme) else f"{scheme}://{host}:{port}"
