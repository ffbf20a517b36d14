"""Which host a browser files a URL's cookies under, and the redirect-URI rule built on it.

Browsers keep cookies per host, not per port or scheme (RFC 6265 §8.5): a cookie Deputy sets
at ``http://127.0.0.1:8000`` is sent to ``http://127.0.0.1:3000`` too. A redirect URI on
Deputy's own host would therefore receive Deputy's session and CSRF cookies along with the
code, so :func:`redirect_shares_cookies` refuses it (issue 11, finding 2). Hosts are compared
as the browser serialises them (WHATWG URL §3.5-§3.7): lower case, IPv4 in dotted decimal
whatever form it was written in (``127.1``, ``0x7f.0.0.1``, ``2130706433``), IPv6 compressed;
``127.0.0.1``, ``localhost`` and ``[::1]`` are three hosts.

Read by :mod:`deputy.config` (``[[clients]]``) and :mod:`deputy.oauth.redirect_uris`, so it
imports nothing of Deputy.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit


def cookie_host(url: str) -> str | None:
    """The host a browser files ``url``'s cookies under, or None when it has no http(s) host.

    Cookies are kept per host, not per port or scheme (RFC 6265 §8.5), and the host is the
    browser's serialisation of it (WHATWG URL §3.5-§3.7): lower case, IPv4 in dotted
    decimal whatever form it was written in, IPv6 compressed. ``127.0.0.1``, ``localhost``
    and ``[::1]`` are three hosts."""
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not host:
        return None
    host = host.rstrip(".")
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host.split("%")[0]).compressed
        except ValueError:
            return host
    ipv4 = _whatwg_ipv4(host)
    return ipv4 if ipv4 is not None else host


def _whatwg_ipv4(host: str) -> str | None:
    """``host`` as the dotted IPv4 address a browser reads in it (``127.1``, ``0x7f.1``, ``2130706433``)."""
    labels = host.split(".")
    if not labels or len(labels) > 4:
        return None
    numbers = []
    for label in labels:
        try:
            if label[:2] in ("0x", "0X"):
                numbers.append(int(label[2:] or "0", 16))
            elif len(label) > 1 and label.startswith("0"):
                numbers.append(int(label, 8))
            else:
                numbers.append(int(label, 10))
        except ValueError:
            return None
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(numbers)):
        return None
    value = last
    for index, number in enumerate(head):
        value += number << (8 * (3 - index))
    return str(ipaddress.IPv4Address(value))


def redirect_shares_cookies(redirect_uri: str, public_url: str) -> str | None:
    """Why ``redirect_uri`` may not be registered with a Deputy at ``public_url``, or None when it may.

    A browser sends Deputy's session and CSRF cookies to every port of Deputy's host, so a
    redirect URI on that host (a native client's loopback listener, say) would receive them."""
    host = cookie_host(redirect_uri)
    if host is None or host != cookie_host(public_url):
        return None
    instead = {"127.0.0.1": "http://localhost:PORT/... or http://[::1]:PORT/...",
               "localhost": "http://127.0.0.1:PORT/... or http://[::1]:PORT/...",
               "::1": "http://localhost:PORT/... or http://127.0.0.1:PORT/..."}.get(host, "another host")
    return (f"{redirect_uri}: is on {host}, the host Deputy itself runs on ({public_url}); a browser "
            f"would send Deputy's sign-in cookies to it. Use {instead} instead")
