"""Every request Deputy makes to an upstream's authorization side, and the upstream's ``401`` challenge.

An upstream MCP server names URLs Deputy then fetches or posts to: its protected resource metadata (RFC 9728), its
authorization server's metadata (RFC 8414) and the endpoints listed there. Those names are the upstream's, not the
operator's, so each request goes through Deputy's SSRF-safe requests (:mod:`deputy.outbound_checked`: https only,
every resolved address checked, the connection pinned to those addresses, no redirect followed, the body capped
while it is read, one time limit for the whole) — unless the URL's host is one the operator vouched for: a host in
``[servers.NAME.oauth] trusted_hosts``, or the origin of the upstream's own configured ``url``. Those go through
Deputy's ordinary client (:mod:`deputy.outbound_http`: no redirect, no cookies, no proxy from the environment, capped)
without the address filter; http is accepted there only for a loopback host (development and tests) or on the
configured URL's own origin when that is http.

:meth:`UpstreamHttp.challenge` sends the upstream an unauthenticated MCP ``initialize`` (and, when that is let through,
an unauthenticated ``tools/list``) to read its ``WWW-Authenticate`` (RFC 9728 §5.1 ``resource_metadata``, RFC 6750
§3 ``scope`` and ``error``), parsed as RFC 9110 §11.6.1 auth-params: quoted strings with their escapes, several
challenges in one header, the ``Bearer`` one chosen.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp

from deputy import bounded_json
from deputy.config import UpstreamServer
from deputy.outbound_checked import CheckedRequests, FetchRefused, HostResolver, is_loopback_host
from deputy.outbound_http import USER_AGENT, Answer, BodyTooLarge, NoAnswer, fetch, open_session, step_timeout

TIMEOUT = 10.0
MAX_BYTES = 64 * 1024
PROTOCOL_VERSION = "2025-11-25"  # sent with the challenge's requests; the 401 comes before any version is read


class UpstreamHttpError(Exception):
    """No usable answer. ``refused``: Deputy would not send the request (an address, a scheme, a redirect);
    ``unreachable``: no complete answer (down, too slow); ``too_large``: the body passed the cap."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


@dataclass(frozen=True, slots=True)
class JsonAnswer:
    status: int
    document: Any  # the parsed JSON body; None when it is not JSON
    headers: Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Challenge:
    """The ``Bearer`` challenge of a ``401``/``403`` (all None when there was none)."""

    resource_metadata: str | None = None
    scope: str | None = None
    error: str | None = None


# RFC 9110 §5.6.2 token, §5.6.4 quoted-string (with quoted-pair), §11.2 token68.
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_PARAM = re.compile(rf"\s*({_TOKEN})\s*=\s*({_TOKEN}|{_QUOTED})\s*(?:,|$)")
_SCHEME = re.compile(rf"\s*({_TOKEN})(?:\s+|\s*(?=,)|\s*$)")
_TOKEN68 = re.compile(r"\s*[A-Za-z0-9\-._~+/]+=*\s*(?:,|$)")


def parse_challenges(header: str) -> list[tuple[str, dict[str, str]]]:
    """RFC 9110 §11.6.1: ``WWW-Authenticate`` as (lower-case scheme, lower-case param → value) pairs, in order.

    A parameter named twice keeps its first value; unparsable text ends the parse (what came before is kept)."""
    challenges: list[tuple[str, dict[str, str]]] = []
    position = 0
    while position < len(header):
        while position < len(header) and header[position] in " \t,":
            position += 1
        scheme = _SCHEME.match(header, position)
        if scheme is None or position >= len(header):
            break
        params: dict[str, str] = {}
        position = scheme.end()
        while position < len(header):
            param = _PARAM.match(header, position)
            if param is None:
                token68 = _TOKEN68.match(header, position)
                if token68 is not None and not params:
                    position = token68.end()
                break
            name, value = param.group(1).lower(), param.group(2)
            if value.startswith('"'):
                value = re.sub(r"\\(.)", r"\1", value[1:-1])
            params.setdefault(name, value)
            position = param.end()
        challenges.append((scheme.group(1).lower(), params))
    return challenges


def parse_challenge(header: str | None) -> Challenge:
    """The ``Bearer`` challenge in a ``WWW-Authenticate`` value (RFC 6750 §3); an empty one when there is none."""
    for scheme, params in parse_challenges(header or ""):
        if scheme == "bearer":
            return Challenge(params.get("resource_metadata") or None, params.get("scope") or None,
                             params.get("error") or None)
    return Challenge()


def origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


class UpstreamHttp:
    """GETs and POSTs to what upstreams name: through the SSRF-safe fetcher unless the host is trusted."""

    def __init__(self, *, development_mode: bool = False, ca_file: str | None = None,
                 resolver: HostResolver | None = None, timeout: float = TIMEOUT) -> None:
        self.development_mode = development_mode
        self.ca_file = ca_file
        self.timeout = timeout
        self.fetcher = CheckedRequests(max_bytes=MAX_BYTES, timeout_seconds=timeout,
                                       development_mode=development_mode, ca_file=ca_file, resolver=resolver)

    def trusted(self, server: UpstreamServer, url: str) -> bool:
        """Whether ``url`` is the operator's: on the upstream's configured origin, or on a trusted host in a scheme
        allowed there (a trusted host's http URL is accepted on loopback only)."""
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        own = urlsplit(server.url or "")
        if (parts.scheme, parts.netloc.lower()) == (own.scheme, own.netloc.lower()):
            return True  # the configured URL's own origin (another port on that host is another service)
        hosts = server.oauth.trusted_hosts if server.oauth is not None else frozenset()
        if host not in hosts:
            return False
        return parts.scheme == "https" or (parts.scheme == "http" and is_loopback_host(host))

    async def get_json(self, server: UpstreamServer, url: str, max_bytes: int = MAX_BYTES) -> JsonAnswer:
        return await self._json(server, "GET", url, {"Accept": "application/json"}, None, max_bytes)

    async def post_form(self, server: UpstreamServer, url: str, form: Mapping[str, str],
                        headers: Mapping[str, str] | None = None, max_bytes: int = MAX_BYTES) -> JsonAnswer:
        sent = {"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded", **(headers or {})}
        return await self._json(server, "POST", url, sent, urlencode(form).encode(), max_bytes)

    async def post_json(self, server: UpstreamServer, url: str, document: Mapping[str, Any],
                        max_bytes: int = MAX_BYTES) -> JsonAnswer:
        sent = {"Accept": "application/json", "Content-Type": "application/json"}
        return await self._json(server, "POST", url, sent, json.dumps(document).encode(), max_bytes)

    async def challenge(self, server: UpstreamServer) -> Challenge:
        """The upstream's answer to an unauthenticated ``initialize`` (then ``tools/list``, for a server that lets
        ``initialize`` through); an empty :class:`Challenge` when neither is refused with one."""
        url = server.url or ""
        headers = {**server.headers, "Content-Type": "application/json",
                   "Accept": "application/json, text/event-stream", "User-Agent": USER_AGENT}
        initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize",
                      "params": {"protocolVersion": PROTOCOL_VERSION, "capabilities": {},
                                 "clientInfo": {"name": "Deputy", "version": "1"}}}
        tools = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}
        for message, extra in ((initialize, {}), (tools, {"MCP-Protocol-Version": PROTOCOL_VERSION})):
            status, www_authenticate = await self._status(url, {**headers, **extra}, json.dumps(message).encode())
            if status in (401, 403):
                return parse_challenge(www_authenticate)
        return Challenge()

    async def _status(self, url: str, headers: Mapping[str, str], body: bytes) -> tuple[int, str | None]:
        """Status and ``WWW-Authenticate`` of one POST to the configured URL; the body is not read (an accepted
        ``initialize`` may answer with a stream)."""
        try:
            async with asyncio.timeout(self.timeout), \
                    open_session(step_timeout(self.timeout), connector=self._connector()) as session, \
                    session.post(url, headers=headers, data=body, allow_redirects=False) as response:
                return response.status, response.headers.get("WWW-Authenticate")
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            raise UpstreamHttpError("unreachable", f"no answer from {url} ({type(exc).__name__})") from None

    def _connector(self) -> aiohttp.TCPConnector:
        return aiohttp.TCPConnector(ssl=self.fetcher.ssl_context)

    async def _json(self, server: UpstreamServer, method: str, url: str, headers: Mapping[str, str],
                    data: bytes | None, max_bytes: int) -> JsonAnswer:
        answer = await self._request(server, method, url, headers, data, max_bytes)
        if 300 <= answer.status < 400:
            # RFC 9110 §15.4: the target of a redirect is a URL nobody named or checked; it is never followed.
            raise UpstreamHttpError("refused", f"{url} answered with a redirect (HTTP {answer.status}), "
                                               "which is not followed")
        try:
            document: Any = bounded_json.loads(answer.body)
        except (ValueError, UnicodeError):
            document = None
        return JsonAnswer(answer.status, document, answer.headers)

    async def _request(self, server: UpstreamServer, method: str, url: str, headers: Mapping[str, str],
                       data: bytes | None, max_bytes: int) -> Answer:
        if not self.trusted(server, url):
            try:
                return await self.fetcher.request(method, url, headers=headers, data=data, max_bytes=max_bytes)
            except FetchRefused as exc:
                kind = {"size": "too_large", "timeout": "unreachable", "connection": "unreachable"}.get(exc.reason,
                                                                                                        "refused")
                raise UpstreamHttpError(kind, exc.message) from None
        try:
            async with asyncio.timeout(self.timeout), \
                    open_session(step_timeout(self.timeout), connector=self._connector()) as session:
                return await fetch(session, method, url, max_bytes=max_bytes, headers=headers, data=data)
        except TimeoutError:
            raise UpstreamHttpError("unreachable", f"no answer from {url} within {self.timeout:g}s") from None
        except NoAnswer as exc:
            raise UpstreamHttpError("unreachable", f"no answer from {url} ({exc.cause_name})") from None
        except BodyTooLarge:
            raise UpstreamHttpError("too_large", f"the answer from {url} is larger than {max_bytes} bytes") from None
