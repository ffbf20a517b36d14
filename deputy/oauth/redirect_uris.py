"""Which redirect URIs a client may register (RFC 7591 §2, RFC 8252 §7, OAuth 2.1 §2.3).

The rules depend on ``application_type`` (OpenID Connect Dynamic Registration §2):

- ``native`` — ``http`` on a loopback address, any port (RFC 8252 §7.3); ``https``
  (claimed URLs, RFC 8252 §7.2); or a private-use scheme in reverse-domain form such
  as ``com.example.app:/callback`` (RFC 8252 §7.1: the scheme must contain a period).
- ``web`` — ``https`` only; never plain ``http``, not even on loopback.

Always: an absolute URI, no fragment (RFC 6749 §3.1.2), no wildcard, no user information,
no whitespace or control characters, and none of the schemes a browser executes or reads
locally.

At request time (:func:`matches_registered`) a redirect URI is compared with the registered
ones as an exact string (OAuth 2.1 §2.3.1), with one exception: a registered
``http://127.0.0.1[:PORT]/…`` or ``http://[::1][:PORT]/…`` matches the same string with any
port (RFC 8252 §7.3, OAuth 2.1 §8.4.2), since a native app listens on whatever port the
system gives it. Only those two IP literals, only ``http``, only the port: the scheme, host,
path and query stay exact, and ``localhost`` stays exact (RFC 8252 §8.3 recommends the
literals). The code is then bound to the URI the request used, not the registered one.

:func:`owned_by_any_local_process` names the redirects that reach whatever process listens on
(or claims) them on the user's machine — loopback hosts and private-use schemes — which are
never answered without a page naming the host (MCP authorization, "display the redirect
hostname"; RFC 8252 §8.6).

And never on Deputy's own host (:func:`refuse_deputy_host`): browsers share cookies
across ports (RFC 6265 §8.5), so a loopback listener on the host Deputy runs on would
receive Deputy's session cookie. On a loopback Deputy at ``127.0.0.1`` native clients
therefore use ``localhost`` or ``[::1]``; a Deputy at ``localhost`` admits the IP
literals RFC 8252 §7.3 recommends.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from deputy.config import is_loopback_http
from deputy.cookie_scope import cookie_host, redirect_shares_cookies
from deputy.oauth.errors import InvalidRedirectUri

APPLICATION_TYPES = ("native", "web")
MAX_URIS = 20
MAX_LENGTH = 2000
# Refused by name even in reverse-domain clothing: they execute or read locally in a browser.
DANGEROUS_SCHEMES = frozenset({"javascript", "data", "file", "vbscript", "about", "blob", "filesystem", "view-source"})
_SCHEME = re.compile(r"^[a-z][a-z0-9+\-.]*$")
# RFC 8252 §7.3: the loopback IP literals whose port the client picks when it sends the request.
# A port is 1-65535 written without leading zeros; anything after it must start the path or query.
_LOOPBACK_LITERAL = re.compile(r"http://(127\.0\.0\.1|\[::1\])(?::([1-9][0-9]{0,4}))?((?:[/?].*)?)", re.DOTALL)
_HOST = re.compile(r"^(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


def check_redirect_uris(value: Any, application_type: str) -> list[str]:
    """The redirect URIs, unchanged, when every one passes; else ``InvalidRedirectUri``."""
    if not isinstance(value, list) or not value or not all(isinstance(u, str) for u in value):
        raise InvalidRedirectUri("redirect_uris must be a non-empty list of URLs")
    if len(value) > MAX_URIS:
        raise InvalidRedirectUri(f"at most {MAX_URIS} redirect URIs may be registered")
    for uri in value:
        check_redirect_uri(uri, application_type)
    return list(value)


def check_redirect_uri(uri: str, application_type: str) -> None:
    if len(uri) > MAX_LENGTH or any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in uri):
        raise InvalidRedirectUri(f"{uri[:100]!r}: too long, or contains whitespace or control characters")
    if "#" in uri:  # RFC 6749 §3.1.2: the endpoint URI MUST NOT include a fragment component.
        raise InvalidRedirectUri(f"{uri}: a redirect URI must not have a fragment")
    if "*" in uri:  # exact matching only (OAuth 2.1 §2.3.1); a pattern is never a redirect URI.
        raise InvalidRedirectUri(f"{uri}: wildcards are not allowed")
    scheme, sep, _rest = uri.partition(":")
    scheme = scheme.lower()
    if not sep or not _SCHEME.match(scheme):
        raise InvalidRedirectUri(f"{uri}: not an absolute URI")
    if scheme in DANGEROUS_SCHEMES:
        raise InvalidRedirectUri(f"{uri}: the {scheme}: scheme is never a redirect URI")
    try:
        parts = urlsplit(uri)
        parts.port  # noqa: B018 — raises ValueError on a malformed port
    except ValueError:
        raise InvalidRedirectUri(f"{uri}: not a valid URI") from None
    if "@" in parts.netloc:
        raise InvalidRedirectUri(f"{uri}: a redirect URI must not carry user information")
    if scheme == "https":
        if not parts.hostname or not (_HOST.match(parts.hostname) or _is_ip(parts.hostname)):
            raise InvalidRedirectUri(f"{uri}: an https redirect URI needs a valid host")
        return
    if application_type == "web":
        raise InvalidRedirectUri(f"{uri}: web clients may register https redirect URIs only")
    if scheme == "http":
        # RFC 8252 §7.3 / §8.3: plain http only to the loopback interface, for native apps.
        if not is_loopback_http(uri):
            raise InvalidRedirectUri(f"{uri}: plain http is allowed only on a loopback address (native clients)")
        return
    if "." not in scheme:
        # RFC 8252 §7.1: private-use schemes use reverse domain names, e.g. com.example.app.
        raise InvalidRedirectUri(f"{uri}: a private-use scheme must be a reverse domain name (com.example.app:/cb)")


def refuse_deputy_host(uris: Iterable[str], public_url: str) -> None:
    """``InvalidRedirectUri`` when a redirect URI is on the host Deputy serves its pages from."""
    for uri in uris:
        problem = redirect_shares_cookies(uri, public_url)
        if problem is not None:
            raise InvalidRedirectUri(problem)


def redirect_host(uri: str) -> str | None:
    """The lower-case host of an http(s) redirect URI; None for private-use schemes."""
    parts = urlsplit(uri)
    if parts.scheme.lower() not in ("http", "https"):
        return None
    return parts.hostname


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def matches_registered(requested: str, registered: Iterable[str]) -> bool:
    """Whether the redirect URI of a request is one the client registered (see the module docstring)."""
    return any(requested == uri or _same_but_port(requested, uri) for uri in registered)


def _same_but_port(requested: str, registered: str) -> bool:
    # RFC 8252 §7.3 / OAuth 2.1 §8.4.2: any port at request time, for loopback IP literals only.
    wanted, got = _loopback_literal(registered), _loopback_literal(requested)
    return wanted is not None and wanted == got


def _loopback_literal(uri: str) -> tuple[str, str] | None:
    """(host, path and query) of an ``http`` loopback IP-literal URI with a valid or no port; else None."""
    match = _LOOPBACK_LITERAL.fullmatch(uri)
    if match is None or (match.group(2) is not None and int(match.group(2)) > 65535):
        return None
    return match.group(1), match.group(3)


def owned_by_any_local_process(uri: str) -> bool:
    """Whether a redirect to ``uri`` reaches whatever listens on, or claims, it on the user's machine.

    Loopback hosts (``localhost`` and its subdomains, 127/8, ``::1``, in any spelling a browser
    reads as one, and the unspecified address browsers have sent to the local host) and private-use
    schemes (RFC 8252 §8.6: any app may claim one). Such a client id proves nothing about who asks."""
    scheme = uri.partition(":")[0].lower()
    if scheme not in ("http", "https"):
        return True
    host = cookie_host(uri)
    if host is None:
        return True  # no host we can read: treat it as the riskier kind
    if host == "localhost" or host.endswith(".localhost"):
        return True  # RFC 6761 §6.3: resolved to loopback
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback or address.is_unspecified
