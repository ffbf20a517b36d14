"""Who the client is behind a reverse proxy: ``trusted_proxies`` and ``X-Forwarded-For``.

Behind a reverse proxy every request arrives from the proxy's address, so each budget Deputy keeps per client
address — registrations (RFC 7591, ``[registration] rate_limit_per_minute``), failed password sign-ins,
sign-ins started at an identity provider — is one budget for everyone, and one outsider can spend it for all.
``trusted_proxies`` (addresses or networks, e.g. ``["10.0.0.0/8"]``) names the proxies whose word is taken:
for a request whose peer is one of them, the client is the right-most address of ``X-Forwarded-For`` that is
not itself a trusted proxy (each proxy appends the address it was reached from, so anything to the left of
that entry was written by the client and proves nothing). uvicorn's :class:`ProxyHeadersMiddleware` does that
walk; around it Deputy keeps two rules of its own:

- what is found must be an IP address, else the peer stays the client: a budget keyed by free text would let
  one client be many;
- the scheme is not taken from ``X-Forwarded-Proto``: every URL Deputy makes comes from ``public_url``.

Unset (the default), no header is believed, whoever sends it. ``"*"`` (trust every peer) is refused: a client
reaching Deputy directly could then name any address it liked. The listener's connection guard
(:mod:`deputy.listener`) still counts TCP peers, which is what it needs: it protects sockets, not budgets.
The gateway (``/mcp/``) reads no client address, so this stands in front of the other routes only.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from deputy.config_values import ConfigError, at, read_strings

MAX_PROXIES = 256
_PEER = "deputy.peer"  # the TCP peer and scheme, kept while uvicorn's middleware reads the headers


def trusted_proxies(raw: Mapping[str, Any]) -> tuple[str, ...]:
    """``trusted_proxies``: each an IP address or network (no host bits set), at most :data:`MAX_PROXIES`."""
    values = read_strings(raw, "trusted_proxies", "", what="addresses or networks")
    if len(values) > MAX_PROXIES:
        raise ConfigError("trusted_proxies", f"at most {MAX_PROXIES} addresses or networks")
    networks = []
    for index, value in enumerate(values):
        if value.strip() == "*":
            raise ConfigError(at("trusted_proxies", index), "trusting every peer would let any client name any "
                              "address in X-Forwarded-For; name the proxies' addresses or networks")
        try:
            networks.append(str(ipaddress.ip_network(value, strict=True)))
        except ValueError as exc:
            raise ConfigError(at("trusted_proxies", index), f"is not an IP address or network ({exc})") from None
    return tuple(dict.fromkeys(networks))


class ForwardedClient:
    """ASGI: for a request from a trusted proxy, ``scope["client"]`` is the client the proxies say they served."""

    def __init__(self, app: ASGIApp, proxies: tuple[str, ...]) -> None:
        self.app = app
        trusted = [*proxies, *_ipv4_mapped(proxies)]
        self._read_headers = ProxyHeadersMiddleware(self._checked, trusted_hosts=trusted)  # type: ignore[arg-type]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope[_PEER] = (scope.get("client"), scope.get("scheme"))
        await self._read_headers(scope, receive, send)  # type: ignore[arg-type]

    async def _checked(self, scope: Scope, receive: Receive, send: Send) -> None:
        peer, scheme = scope.pop(_PEER)
        scope["scheme"] = scheme
        client = scope.get("client")
        if client != peer:
            host = client[0] if isinstance(client, tuple | list) and client else ""
            try:
                ipaddress.ip_address(str(host))
            except ValueError:
                scope["client"] = peer
        await self.app(scope, receive, send)


def _ipv4_mapped(proxies: tuple[str, ...]) -> list[str]:
    """Each IPv4 network as a dual-stack socket reports its peers (``::ffff:10.0.0.5``, RFC 4291 §2.5.5.2)."""
    mapped = []
    for proxy in proxies:
        network = ipaddress.ip_network(proxy)
        if isinstance(network, ipaddress.IPv4Network):
            first = ipaddress.IPv6Address(f"::ffff:{network.network_address}")
            mapped.append(str(ipaddress.IPv6Network((first, 96 + network.prefixlen))))
    return mapped
