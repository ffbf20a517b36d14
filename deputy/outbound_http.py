"""Deputy's own outbound HTTP: one client (aiohttp), one place that opens its sessions and reads capped answers.

Every request Deputy makes of its own accord goes through a session from :func:`open_session`: forwarding to HTTP
upstreams (:mod:`deputy.gateway.http_upstream`), documents and key sets someone else named
(:mod:`deputy.oauth.document_fetcher`, which adds its address checks on top), trusted issuers' JWK Sets
(:mod:`deputy.oauth.trusted_issuers`), checkpoints pushed to witnesses and read back from them
(:mod:`deputy.audit.witness_push`, :mod:`deputy.audit.verify.anchors`). So, on every outbound request:

- no cookie is kept or sent: state one server sets is never Deputy's to carry (RFC 6265 §4.1);
- nothing comes from the environment (no ``HTTP(S)_PROXY``, no ``.netrc`` credentials): only what Deputy was
  configured with sees the request;
- no answer is decompressed and :func:`fetch` asks for ``identity`` (RFC 9110 §12.5.3), so a byte cap counts what
  arrives;
- TLS verifies the server against the system's trust store (or a CA file given for development);
- no redirect is followed (RFC 9110 §15.4): its target is a URL nobody configured or checked; :func:`fetch`
  returns the 3xx as the answer.

:func:`read_capped` refuses a body whose ``Content-Length`` passes the cap before reading it, and stops reading as
soon as the cap is passed otherwise (attack classes: "capped while reading, not after").

Why aiohttp and not httpx is in the README ("Dependencies"): on the forward path, per call, httpx cost 4.8 ms of
CPU and aiohttp 0.6 ms (``bench/README.md``).
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import aiohttp
from aiohttp.abc import AbstractResolver

USER_AGENT = "Deputy"
READ_CHUNK = 4096


class NoAnswer(Exception):
    """No complete answer came: no connection, a connection that broke, a time limit, a URL that cannot be asked.

    ``str()`` names the cause as the client library reported it (its type and text), for logs and messages.
    """

    def __init__(self, cause: BaseException) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause = cause

    @property
    def cause_name(self) -> str:
        return type(self.cause).__name__


class BodyTooLarge(ValueError):
    """The answer's body is larger than the caller reads; ``declared`` is its ``Content-Length`` when that told."""

    def __init__(self, max_bytes: int, declared: int | None = None) -> None:
        super().__init__(f"the answer is {declared} bytes; at most {max_bytes} are read" if declared is not None
                         else f"the answer is larger than {max_bytes} bytes")
        self.max_bytes = max_bytes
        self.declared = declared


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: Mapping[str, str]  # case-insensitive (aiohttp's)
    body: bytes

    @property
    def text(self) -> str:
        """The body as UTF-8, undecodable bytes replaced (for messages and line-based formats)."""
        return self.body.decode("utf-8", errors="replace")


def tls_context(ca_file: str | None = None) -> ssl.SSLContext:
    """Certificate and host name verified; ``ca_file`` replaces the system trust store (a development CA)."""
    return ssl.create_default_context(cafile=ca_file)


def step_timeout(seconds: float) -> aiohttp.ClientTimeout:
    """Getting a connection, connecting, and each read must each finish within ``seconds``; the whole is unbounded."""
    return aiohttp.ClientTimeout(total=None, connect=seconds, sock_connect=seconds, sock_read=seconds)


def open_session(
    timeout: aiohttp.ClientTimeout,
    *,
    connector: aiohttp.BaseConnector | None = None,
    resolver: AbstractResolver | None = None,
    skip_auto_headers: Iterable[str] = (),
) -> aiohttp.ClientSession:
    """A client session with the settings of the module docstring; the caller closes it (``async with``).

    ``connector`` replaces the default one (pool sizes, checked addresses, a CA file); ``resolver`` says which
    addresses a host name means for the default connector (tests point a witness's name at a local server).
    """
    if connector is None:
        connector = aiohttp.TCPConnector(resolver=resolver)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        cookie_jar=aiohttp.DummyCookieJar(),
        trust_env=False,
        auto_decompress=False,
        skip_auto_headers=tuple(skip_auto_headers),
    )


async def read_capped(response: aiohttp.ClientResponse, max_bytes: int) -> bytes:
    """The body, at most ``max_bytes`` of it; raises :class:`BodyTooLarge` as soon as it is known to be larger."""
    declared = response.content_length
    if declared is not None and declared > max_bytes:
        raise BodyTooLarge(max_bytes, declared)
    body = bytearray()
    async for chunk in response.content.iter_chunked(READ_CHUNK):
        body += chunk
        if len(body) > max_bytes:
            raise BodyTooLarge(max_bytes)
    return bytes(body)


async def fetch(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    max_bytes: int,
    headers: Mapping[str, str] | None = None,
    data: bytes | None = None,
) -> Answer:
    """One request and its whole answer (body capped at ``max_bytes``), whatever its status.

    Raises :class:`NoAnswer` when no complete answer came and :class:`BodyTooLarge` past the cap; nothing else.
    """
    sent = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **(headers or {})}
    try:
        async with session.request(method, url, headers=sent, data=data, allow_redirects=False) as response:
            return Answer(response.status, response.headers, await read_capped(response, max_bytes))
    except BodyTooLarge:
        raise
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
        # ValueError: a URL aiohttp or yarl cannot parse; OSError: a socket error not wrapped by aiohttp.
        raise NoAnswer(exc) from exc
