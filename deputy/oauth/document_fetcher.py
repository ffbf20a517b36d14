"""Fetching a small JSON document from a URL someone else chose, without being turned against the network.

A client ID metadata document's URL is supplied by whoever starts an authorization request, so fetching it is
server-side request forgery waiting to happen (MCP 2026-07-28 "Client ID Metadata Documents", Security
Considerations; OAuth Client ID Metadata Document draft §6 "Server-Side Request Forgery"). The address checks, the
connection pinned to the checked addresses, no redirect, the byte cap and the time limit are
:mod:`deputy.outbound_checked`'s (shared with the requests to what upstream MCP servers name); what is added here:

- a redirect is a refusal (the document must be served at its ``client_id``), as is any status but 200;
- ``Content-Type: application/json`` (or ``+json``), no content coding, and JSON (nesting bounded).

Every refusal is a :class:`FetchRefused` subclass naming its reason; nothing else escapes. The names of
:mod:`deputy.outbound_checked` are re-exported here for the callers that know them by this module.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import aiohttp
from yarl import URL

from deputy import bounded_json
from deputy.outbound_checked import (
    METADATA_ADDRESSES,
    AddressRefused,
    CheckedRequests,
    ConnectionFailed,
    ContentTypeRefused,
    FetchRefused,
    HostResolver,
    IPAddress,
    NameNotResolved,
    NotJson,
    RedirectRefused,
    StatusRefused,
    SystemResolver,
    TimedOut,
    TooLarge,
    UrlRefused,
    forbidden_category,
    is_loopback_host,
)
from deputy.outbound_http import USER_AGENT, BodyTooLarge, open_session, read_capped

__all__ = ["METADATA_ADDRESSES", "AddressRefused", "CheckedRequests", "ConnectionFailed", "ContentTypeRefused",
           "DocumentFetcher", "FetchRefused", "FetchedDocument", "HostResolver", "IPAddress", "NameNotResolved",
           "NotJson", "RedirectRefused", "StatusRefused", "SystemResolver", "TimedOut", "TooLarge", "UrlRefused",
           "forbidden_category", "is_loopback_host"]


@dataclass(frozen=True, slots=True)
class FetchedDocument:
    url: str
    value: Any
    cache_control: str | None
    expires: str | None
    date: str | None


class DocumentFetcher(CheckedRequests):
    """GETs one JSON document (:meth:`fetch`); :meth:`request` is any checked request."""

    async def fetch(self, url: str) -> FetchedDocument:
        """GET ``url`` and return its JSON value; raise a :class:`FetchRefused` subclass otherwise."""
        try:
            async with asyncio.timeout(self.timeout_seconds):
                return await self._fetch(url)
        except TimeoutError:
            raise TimedOut(f"no complete answer within {self.timeout_seconds:g}s") from None

    async def _fetch(self, url: str) -> FetchedDocument:
        host, _port, addresses = await self.check(url)
        connector = self._connector(host, addresses)
        headers = {"Accept": "application/json", "Accept-Encoding": "identity", "User-Agent": USER_AGENT}
        try:
            async with (
                open_session(aiohttp.ClientTimeout(total=self.timeout_seconds), connector=connector) as session,
                session.get(URL(url, encoded=True), headers=headers, allow_redirects=False) as response,
            ):
                return await self._read(url, response)
        except TimeoutError:
            raise TimedOut(f"no complete answer within {self.timeout_seconds:g}s") from None
        except aiohttp.ClientError as exc:
            raise ConnectionFailed(f"could not fetch the document: {type(exc).__name__}: {exc}") from None
        except (OSError, ValueError) as exc:
            raise ConnectionFailed(f"could not fetch the document: {exc}") from None

    async def _read(self, url: str, response: aiohttp.ClientResponse) -> FetchedDocument:
        if 300 <= response.status < 400:
            where = response.headers.get("Location", "nowhere")
            raise RedirectRefused(f"the document URL answered {response.status}, redirecting to {where}; "
                                  "redirects are not followed (the document must be served at its client_id)")
        if response.status != 200:
            raise StatusRefused(f"the document URL answered HTTP {response.status}")
        media_type = response.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if media_type != "application/json" and not (media_type.startswith("application/")
                                                     and media_type.endswith("+json")):
            raise ContentTypeRefused(f"the document's Content-Type is {media_type or 'missing'}, "
                                     "not application/json")
        encoding = response.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding != "identity":
            raise ContentTypeRefused(f"the document is sent with Content-Encoding {encoding}; identity was asked")
        try:
            body = await read_capped(response, self.max_bytes)
        except BodyTooLarge as exc:
            if exc.declared is not None:
                raise TooLarge(f"the document is {exc.declared} bytes; at most {self.max_bytes} are read") from None
            raise TooLarge(f"the document is larger than {self.max_bytes} bytes") from None
        try:
            value = bounded_json.loads(body)
        except (UnicodeDecodeError, ValueError):
            raise NotJson("the document is not valid JSON") from None
        return FetchedDocument(url=url, value=value, cache_control=response.headers.get("Cache-Control"),
                               expires=response.headers.get("Expires"), date=response.headers.get("Date"))
