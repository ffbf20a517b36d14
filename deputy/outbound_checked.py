"""Requests to a URL someone else chose, without being turned against the network (server-side request forgery).

A URL Deputy did not configure — a client ID metadata document's (:mod:`deputy.oauth.document_fetcher`), or one an
upstream names in its protected resource or authorization server metadata (:mod:`deputy.connections.upstream_http`)
— may point at Deputy's own network: a cloud metadata service, an admin port on loopback, a database on a private
address (MCP 2026-07-28 Security Considerations; OAuth Client ID Metadata Document draft §6). :class:`CheckedRequests`:

1. accepts ``https`` only (``http`` only to a loopback host in development mode);
2. resolves the host itself, through an injectable :class:`HostResolver`, and refuses the request if *any* address
   is loopback (outside development mode), private, link-local, unique-local, multicast, unspecified, reserved or
   shared (CGNAT), a cloud metadata address, or an IPv4-mapped / NAT64 / 6to4 / Teredo form of one of those; an IP
   literal in the URL is checked the same way;
3. connects only to the addresses it checked: aiohttp is given a resolver that answers with those addresses and
   nothing else, so there is no second lookup to rebind; TLS still verifies the certificate against the URL's host;
4. follows no redirect (a 3xx is returned as the answer, never followed: its target was never checked), reads at
   most ``max_bytes`` (and stops reading there), gives up after ``timeout_seconds`` in total, asks for no
   compression, sends no cookies and uses no proxy from the environment (:mod:`deputy.outbound_http`'s session).

Every refusal is a :class:`FetchRefused` subclass naming its reason; nothing else escapes.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Mapping, Sequence
from typing import Protocol
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from deputy.outbound_http import Answer, BodyTooLarge, NoAnswer, fetch, open_session, tls_context

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Cloud instance metadata services: AWS/GCP/Azure/OpenStack, AWS over IPv6, Alibaba, Oracle.
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "fd00:ec2::254", "100.100.100.200", "192.0.0.192",
))
_SHARED = ipaddress.ip_network("100.64.0.0/10")  # RFC 6598 carrier-grade NAT
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052: embeds an IPv4 address


# -- errors ---------------------------------------------------------------------------------------


class FetchRefused(Exception):
    """The request was not made, or its answer not accepted; ``reason`` is a short stable token."""

    reason = "refused"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UrlRefused(FetchRefused):
    reason = "url"


class AddressRefused(FetchRefused):
    """The host is, or resolves to, an address Deputy never fetches from."""

    reason = "address"

    def __init__(self, host: str, address: str, category: str) -> None:
        super().__init__(f"{host} is or resolves to a {category} address ({address})")
        self.host = host
        self.address = address
        self.category = category


class NameNotResolved(FetchRefused):
    reason = "resolution"


class RedirectRefused(FetchRefused):
    reason = "redirect"


class StatusRefused(FetchRefused):
    reason = "status"


class TooLarge(FetchRefused):
    reason = "size"


class TimedOut(FetchRefused):
    reason = "timeout"


class ContentTypeRefused(FetchRefused):
    reason = "content_type"


class NotJson(FetchRefused):
    reason = "json"


class ConnectionFailed(FetchRefused):
    reason = "connection"


# -- addresses ------------------------------------------------------------------------------------


def forbidden_category(address: IPAddress, allow_loopback: bool = False) -> str | None:
    """Why Deputy must not connect to ``address`` (``None`` when it is a public unicast address)."""
    if isinstance(address, ipaddress.IPv6Address):
        address = ipaddress.IPv6Address(address.packed)  # drop any %scope
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            inner = forbidden_category(embedded, allow_loopback)
            return f"{inner} (embedded in IPv6)" if inner else None
    if address in METADATA_ADDRESSES:
        return "cloud metadata"
    if address.is_loopback:
        return None if allow_loopback else "loopback"
    if address.is_unspecified:
        return "unspecified"
    if address.is_link_local:
        return "link-local"
    if address.is_multicast:
        return "multicast"
    if isinstance(address, ipaddress.IPv6Address) and address in ipaddress.IPv6Network("fc00::/7"):
        return "unique-local"
    if isinstance(address, ipaddress.IPv4Address) and address in _SHARED:
        return "shared (CGNAT)"
    if address.is_private:
        return "private"
    if address.is_reserved:
        return "reserved"
    if not address.is_global:
        return "non-public"
    return None


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(address.packed[-4:])
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    return None


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def is_loopback_host(host: str) -> bool:
    literal = _literal(host)
    return host.lower() == "localhost" if literal is None else literal.is_loopback


# -- resolution -----------------------------------------------------------------------------------


class HostResolver(Protocol):
    """Turns a host name into IP address strings; injectable so tests control what a name means."""

    async def resolve(self, host: str, port: int) -> Sequence[str]: ...


class SystemResolver:
    """The operating system's resolver (``getaddrinfo``), run off the event loop."""

    async def resolve(self, host: str, port: int) -> Sequence[str]:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
        except (OSError, UnicodeError) as exc:
            raise NameNotResolved(f"{host} could not be resolved: {exc}") from None
        return list(dict.fromkeys(str(info[4][0]) for info in infos))


class _CheckedAddresses(AbstractResolver):
    """What aiohttp asks when it connects: only the addresses already checked, for the one host checked."""

    def __init__(self, host: str, addresses: Sequence[IPAddress]) -> None:
        self.host = host
        self.addresses = tuple(addresses)

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
                      ) -> list[ResolveResult]:
        if host != self.host:
            raise OSError(f"refusing to resolve {host!r}: only {self.host!r} was checked")
        return [
            ResolveResult(hostname=host, host=str(a), port=port,
                          family=socket.AF_INET if a.version == 4 else socket.AF_INET6,
                          proto=socket.IPPROTO_TCP, flags=socket.AI_NUMERICHOST)
            for a in self.addresses
        ]

    async def close(self) -> None:
        return None


# -- checked requests -----------------------------------------------------------------------------


class CheckedRequests:
    """Requests to URLs someone else chose, with the checks of the module docstring."""

    def __init__(
        self,
        *,
        max_bytes: int,
        timeout_seconds: float,
        development_mode: bool = False,
        ca_file: str | None = None,
        resolver: HostResolver | None = None,
    ) -> None:
        self.max_bytes = max_bytes
        self.timeout_seconds = timeout_seconds
        self.development_mode = development_mode
        self.resolver: HostResolver = resolver or SystemResolver()
        # A CA file replaces the system trust store (for a development or test CA).
        self.ssl_context = tls_context(ca_file)

    async def check(self, url: str) -> tuple[str, int, list[IPAddress]]:
        """Validate the URL and resolve its host; the (host, port, addresses) that may be connected to."""
        parts = urlsplit(url)
        host = parts.hostname
        if not host:
            raise UrlRefused("the URL has no host")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise UrlRefused("the URL's port is not a number from 0 to 65535") from None
        if parts.username is not None or parts.password is not None:
            raise UrlRefused("the URL carries a user name or password")
        if parts.scheme == "http":
            if not (self.development_mode and is_loopback_host(host)):
                raise UrlRefused("only https URLs are fetched (http only for loopback in development mode)")
        elif parts.scheme != "https":
            raise UrlRefused("only https URLs are fetched")
        literal = _literal(host)
        if literal is not None:
            addresses: list[IPAddress] = [literal]
        else:
            try:
                names = await self.resolver.resolve(host, port)
            except (OSError, UnicodeError, LookupError) as exc:
                raise NameNotResolved(f"{host} could not be resolved: {exc}") from None
            try:
                addresses = [ipaddress.ip_address(a.split("%", 1)[0]) for a in names]
            except ValueError:
                raise NameNotResolved(f"{host} resolved to something that is not an IP address") from None
            if not addresses:
                raise NameNotResolved(f"{host} has no address")
        for address in addresses:  # every address: a connection may be tried on any of them
            category = forbidden_category(address, allow_loopback=self.development_mode)
            if category is not None:
                raise AddressRefused(host, str(address), category)
        return host, port, addresses

    async def request(self, method: str, url: str, *, headers: Mapping[str, str], data: bytes | None = None,
                      max_bytes: int | None = None) -> Answer:
        """``method`` ``url`` with the checks of the module docstring; the answer whatever its status (a 3xx is an
        answer, not followed). Raises a :class:`FetchRefused` subclass (never an aiohttp error)."""
        cap = self.max_bytes if max_bytes is None else max_bytes
        try:
            async with asyncio.timeout(self.timeout_seconds):
                host, _port, addresses = await self.check(url)
                async with open_session(aiohttp.ClientTimeout(total=self.timeout_seconds),
                                        connector=self._connector(host, addresses)) as session:
                    return await fetch(session, method, url, max_bytes=cap, headers=headers, data=data)
        except TimeoutError:
            raise TimedOut(f"no complete answer within {self.timeout_seconds:g}s") from None
        except BodyTooLarge:
            raise TooLarge(f"the answer is larger than {cap} bytes") from None
        except NoAnswer as exc:
            if isinstance(exc.cause, TimeoutError):  # aiohttp's own time limit, reached first
                raise TimedOut(f"no complete answer within {self.timeout_seconds:g}s") from None
            raise ConnectionFailed(f"no answer from {url} ({exc.cause_name})") from None

    def _connector(self, host: str, addresses: Sequence[IPAddress]) -> aiohttp.TCPConnector:
        """Connects to ``addresses`` only, and only for ``host``: no second lookup to rebind."""
        return aiohttp.TCPConnector(resolver=_CheckedAddresses(host, addresses), use_dns_cache=False,
                                    ssl=self.ssl_context, limit=1, force_close=True)
