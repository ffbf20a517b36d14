"""Client ID Metadata Documents: the SSRF-safe fetcher and the document rules, each refusal on its own.

The fetcher runs in this process against real HTTPS servers on 127.0.0.1 (a throwaway CA,
tests/support/tls.py). No traffic ever goes to a non-loopback address: for those, the
`connections` fixture replaces ``socket.connect`` with a recorder that refuses anything
but loopback, and each test asserts the fetcher refused *before* any connection was tried.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import ssl
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from deputy import clock
from deputy.client_trust import ClientDocumentPolicy, client_document_policy
from deputy.config_values import ConfigError
from deputy.oauth.client_assertions import check_client_jwks
from deputy.oauth.client_documents import (
    NOT_FETCHED,
    ClientDocumentRefused,
    ClientDocumentResolver,
    cache_lifetime,
    check_client_id_url,
)
from deputy.oauth.client_keys import ClientKeys
from deputy.oauth.document_fetcher import (
    AddressRefused,
    ConnectionFailed,
    ContentTypeRefused,
    DocumentFetcher,
    FetchedDocument,
    HostResolver,
    NameNotResolved,
    NotJson,
    RedirectRefused,
    StatusRefused,
    TimedOut,
    TooLarge,
    UrlRefused,
)
from deputy.oauth.errors import InvalidClient
from deputy.storage.clients import Client, ClientRepository
from deputy.storage.db import Database
from tests.support.databases import database_url
from tests.support.document_server import DocumentServer
from tests.support.tls import TlsFiles


class FakeResolver:
    """A name service under the test's control: it answers from a table and records every question."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.asked: list[str] = []

    async def resolve(self, host: str, port: int) -> Sequence[str]:
        self.asked.append(host)
        return self.table[host]


class Connections:
    def __init__(self) -> None:
        self.attempts: list[str] = []

    @property
    def non_loopback(self) -> list[str]:
        return [a for a in self.attempts if not ipaddress.ip_address(a.split("%")[0]).is_loopback]


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> Connections:
    """Every outgoing TCP connection attempt of this process, recorded; non-loopback ones never made."""
    seen = Connections()
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def check(address: Any) -> None:
        host = str(address[0]) if isinstance(address, tuple) else str(address)
        seen.attempts.append(host)
        if not ipaddress.ip_address(host.split("%")[0]).is_loopback:
            raise AssertionError(f"test tried to connect to non-loopback {host}")

    def connect(self: socket.socket, address: Any) -> None:
        check(address)
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        check(address)
        return real_connect_ex(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    return seen


def fetcher(tls: TlsFiles | None, *, development_mode: bool = False, max_bytes: int = 5 * 1024,
            timeout: float = 3.0, resolver: FakeResolver | None = None) -> DocumentFetcher:
    return DocumentFetcher(max_bytes=max_bytes, timeout_seconds=timeout, development_mode=development_mode,
                           ca_file=str(tls.ca_file) if tls else None, resolver=resolver)


# -- addresses: refused before any connection ------------------------------------------------------


@pytest.mark.parametrize(("url", "category"), [
    ("https://169.254.169.254/latest/meta-data", "cloud metadata"),
    ("https://10.0.0.1/client.json", "private"),
    ("https://[fd00::1]/client.json", "unique-local"),
    ("https://172.16.5.4/client.json", "private"),
    ("https://192.168.1.1/client.json", "private"),
    ("https://[fe80::1]/client.json", "link-local"),
    ("https://169.254.10.10/client.json", "link-local"),
    ("https://100.64.0.1/client.json", "shared (CGNAT)"),
    ("https://[fd00:ec2::254]/latest", "cloud metadata"),
    ("https://224.0.0.1/client.json", "multicast"),
    ("https://[ff02::1]/client.json", "multicast"),
    ("https://0.0.0.0/client.json", "unspecified"),
    ("https://[::]/client.json", "unspecified"),
    ("https://240.0.0.1/client.json", "private"),
    ("https://[::ffff:169.254.169.254]/x", "cloud metadata (embedded in IPv6)"),
    ("https://[::ffff:10.0.0.1]/x", "private (embedded in IPv6)"),
    ("https://[::ffff:127.0.0.1]/x", "loopback (embedded in IPv6)"),
    ("https://[64:ff9b::a00:1]/x", "private (embedded in IPv6)"),
])
async def test_forbidden_ip_literals_are_refused_before_connecting(
        url: str, category: str, connections: Connections) -> None:
    with pytest.raises(AddressRefused) as refused:
        await fetcher(None).fetch(url)
    assert refused.value.category == category
    assert connections.attempts == [], "refused before any socket connected"


@pytest.mark.parametrize("url", ["https://127.0.0.1:{port}/ok.json", "https://[::1]:{port}/ok.json",
                                 "https://localhost:{port}/ok.json"])
async def test_loopback_is_refused_outside_development_mode(
        url: str, docs: DocumentServer, tls: TlsFiles, connections: Connections) -> None:
    docs.serve("/ok.json", {"hello": "world"})
    with pytest.raises(AddressRefused) as refused:
        await fetcher(tls).fetch(url.format(port=docs.port))
    assert refused.value.category == "loopback"
    assert connections.attempts == []


async def test_loopback_is_fetched_in_development_mode(docs: DocumentServer, tls: TlsFiles,
                                                       connections: Connections) -> None:
    """The control for the loopback refusals: the very same server answers when loopback is allowed."""
    docs.serve("/ok.json", {"hello": "world"}, headers={"Cache-Control": "max-age=120"})
    fetched = await fetcher(tls, development_mode=True).fetch(docs.url("/ok.json"))
    assert fetched.value == {"hello": "world"}
    assert fetched.cache_control == "max-age=120"
    assert connections.attempts and not connections.non_loopback


async def test_a_name_resolving_to_a_private_address_is_refused_before_connecting(connections: Connections) -> None:
    resolver = FakeResolver({"clients.example.com": ["10.20.30.40"]})
    with pytest.raises(AddressRefused) as refused:
        await fetcher(None, resolver=resolver).fetch("https://clients.example.com/app.json")
    assert refused.value.category == "private" and refused.value.address == "10.20.30.40"
    assert resolver.asked == ["clients.example.com"]
    assert connections.attempts == []


async def test_one_private_address_among_public_ones_is_enough_to_refuse(connections: Connections) -> None:
    resolver = FakeResolver({"mixed.example.com": ["93.184.216.34", "2606:2800:220:1::1", "169.254.169.254"]})
    with pytest.raises(AddressRefused) as refused:
        await fetcher(None, resolver=resolver).fetch("https://mixed.example.com/app.json")
    assert refused.value.category == "cloud metadata"
    assert connections.attempts == []


async def test_a_name_resolving_to_loopback_is_refused_outside_development_mode(connections: Connections) -> None:
    resolver = FakeResolver({"rebind.example.com": ["127.0.0.1"]})
    with pytest.raises(AddressRefused):
        await fetcher(None, resolver=resolver).fetch("https://rebind.example.com/app.json")
    assert connections.attempts == []


async def test_the_connection_goes_to_the_checked_address_only(
        docs: DocumentServer, tls: TlsFiles, connections: Connections) -> None:
    """No second lookup: aiohttp connects where the injected resolver said, and TLS checks the URL's name."""
    docs.serve("/ok.json", {"ok": True})
    resolver = FakeResolver({"localhost": ["127.0.0.1"]})
    fetched = await fetcher(tls, development_mode=True, resolver=resolver).fetch(
        f"https://localhost:{docs.port}/ok.json")
    assert fetched.value == {"ok": True}
    assert resolver.asked == ["localhost"]
    assert connections.attempts == ["127.0.0.1"]


# -- URL rules -------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", [
    "http://clients.example.com/app.json",
    "http://127.0.0.1:9/app.json",  # http loopback only in development mode
    "ftp://clients.example.com/app.json",
    "https://user:pass@clients.example.com/app.json",
    "https:///app.json",
])
async def test_urls_other_than_https_are_refused(url: str, connections: Connections) -> None:
    resolver = FakeResolver({})
    with pytest.raises(UrlRefused):
        await fetcher(None, resolver=resolver).fetch(url)
    assert resolver.asked == [] and connections.attempts == []


# -- what the server answers -----------------------------------------------------------------------


async def test_a_redirect_is_refused_and_not_followed(docs: DocumentServer, tls: TlsFiles,
                                                      connections: Connections) -> None:
    """A 302 to a private address: the one request goes to the loopback server, none to the target."""
    docs.serve("/moved.json", b"", status=302, headers={"Location": "https://10.0.0.1/client.json"})
    before = docs.hits.get("/moved.json", 0)
    with pytest.raises(RedirectRefused) as refused:
        await fetcher(tls, development_mode=True).fetch(docs.url("/moved.json"))
    assert "10.0.0.1" in str(refused.value) and "not followed" in str(refused.value)
    assert docs.hits["/moved.json"] == before + 1
    assert connections.attempts and not connections.non_loopback


async def test_a_redirect_to_metadata_by_name_is_refused_too(docs: DocumentServer, tls: TlsFiles,
                                                             connections: Connections) -> None:
    docs.serve("/moved2.json", b"", status=307, headers={"Location": "http://169.254.169.254/latest/meta-data"})
    with pytest.raises(RedirectRefused):
        await fetcher(tls, development_mode=True).fetch(docs.url("/moved2.json"))
    assert not connections.non_loopback


async def test_an_oversized_document_is_refused(docs: DocumentServer, tls: TlsFiles) -> None:
    docs.serve("/big.json", {"padding": "x" * 10_000})
    with pytest.raises(TooLarge):
        await fetcher(tls, development_mode=True, max_bytes=5 * 1024).fetch(docs.url("/big.json"))


async def test_an_oversized_document_without_length_is_cut_off(docs: DocumentServer, tls: TlsFiles) -> None:
    docs.serve("/big-stream.json", {"padding": "x" * 200_000}, chunked=True)
    with pytest.raises(TooLarge) as refused:
        await fetcher(tls, development_mode=True, max_bytes=5 * 1024).fetch(docs.url("/big-stream.json"))
    assert "larger than 5120 bytes" in str(refused.value)


class SlowServer:
    """An HTTPS server on loopback that never finishes an answer: silent, or dripping a byte at a time (a
    slow loris, which only a deadline on the whole fetch stops); it notes when the client hangs up."""

    def __init__(self, tls: TlsFiles, *, drip: bool) -> None:
        self.tls = tls
        self.drip = drip
        self.closed = asyncio.Event()
        self.url = ""

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[SlowServer]:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.tls.cert_file, self.tls.key_file)
        server = await asyncio.start_server(self._answer, "127.0.0.1", 0, ssl=context)
        self.url = f"https://127.0.0.1:{server.sockets[0].getsockname()[1]}/slow.json"
        async with server:
            yield self

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        hung_up = asyncio.create_task(self._until_end(reader))
        try:
            if self.drip:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n")
                while not hung_up.done():
                    writer.write(b" ")  # JSON allows leading whitespace: the document is never refused as malformed
                    await writer.drain()
                    await asyncio.wait({hung_up}, timeout=0.05)
            await hung_up
        except (ConnectionError, ssl.SSLError):
            pass  # a write after the client left
        finally:
            hung_up.cancel()
            self.closed.set()
            writer.close()

    @staticmethod
    async def _until_end(reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(ConnectionError, ssl.SSLError):
            while await reader.read(4096):
                pass


@pytest.mark.parametrize("drip", [False, True], ids=["silent", "dripping"])
async def test_a_slow_document_is_cut_off_at_the_deadline(tls: TlsFiles, drip: bool) -> None:
    """Issue 17 (no timings in tests): the fetch fails as timed out and the server sees the connection closed,
    also while bytes keep arriving (the deadline is on the whole fetch, not on each read)."""
    async with SlowServer(tls, drip=drip).running() as server:
        fetch = fetcher(tls, development_mode=True, timeout=0.5).fetch(server.url)
        with pytest.raises(TimedOut):
            await asyncio.wait_for(fetch, 60)  # the bound only keeps a broken fetcher from hanging the suite
        await asyncio.wait_for(server.closed.wait(), 60)


@pytest.mark.parametrize("content_type", ["text/html", "text/plain", "application/octet-stream", ""])
async def test_a_document_of_the_wrong_content_type_is_refused(
        content_type: str, docs: DocumentServer, tls: TlsFiles) -> None:
    docs.serve("/typed.json", {"client_id": "x"}, content_type=content_type)
    with pytest.raises(ContentTypeRefused):
        await fetcher(tls, development_mode=True).fetch(docs.url("/typed.json"))


async def test_json_content_types_are_accepted(docs: DocumentServer, tls: TlsFiles) -> None:
    for content_type in ("application/json; charset=utf-8", "application/oauth-client+json"):
        docs.serve("/typed-ok.json", {"ok": 1}, content_type=content_type)
        assert (await fetcher(tls, development_mode=True).fetch(docs.url("/typed-ok.json"))).value == {"ok": 1}


async def test_a_document_that_is_not_json_is_refused(docs: DocumentServer, tls: TlsFiles) -> None:
    docs.serve("/broken.json", b"{\"client_id\": ", content_type="application/json")
    with pytest.raises(NotJson):
        await fetcher(tls, development_mode=True).fetch(docs.url("/broken.json"))


async def test_an_error_status_is_refused(docs: DocumentServer, tls: TlsFiles) -> None:
    with pytest.raises(StatusRefused):
        await fetcher(tls, development_mode=True).fetch(docs.url("/missing.json"))


async def test_a_certificate_from_an_untrusted_ca_is_refused(docs: DocumentServer) -> None:
    docs.serve("/ok.json", {"ok": True})
    with pytest.raises(ConnectionFailed):
        await fetcher(None, development_mode=True).fetch(docs.url("/ok.json"))


# -- the document and the trust policy (storage: both backends) ------------------------------------


@pytest.fixture(scope="module")
def db_url(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    directory: Path = tmp_path_factory.mktemp(f"documents-{backend}")
    with database_url(backend, directory) as value:
        yield value


@pytest.fixture(scope="module")
async def repository(db_url: str) -> AsyncIterator[ClientRepository]:
    database = Database(db_url)
    await database.migrate()
    yield ClientRepository(database.engine)
    await database.dispose()


def resolver_for(repository: ClientRepository, tls: TlsFiles, **rules: Any) -> ClientDocumentResolver:
    policy = ClientDocumentPolicy(**{"development_mode": True, "allowed_domains": ("127.0.0.1",),
                                     "ca_file": str(tls.ca_file), "cache_min_seconds": 0, **rules})
    return ClientDocumentResolver.from_policy(policy, repository)


async def test_a_valid_document_from_an_allowed_domain_is_an_active_client(
        repository: ClientRepository, docs: DocumentServer, tls: TlsFiles) -> None:
    url = docs.serve_document("/valid.json", grant_types=["authorization_code", "refresh_token"])
    client = await resolver_for(repository, tls).resolve(url)
    assert (client.client_id, client.status, client.source) == (url, "active", "document")
    assert client.redirect_uris == ("http://localhost:9/callback",) and client.is_public
    stored = await repository.get(url)
    assert stored is not None and stored.status == "active" and stored.source == "document"


@pytest.mark.parametrize(("served_as", "claimed"), [
    ("/slash.json", "/slash.json/"),
    ("/case.json", "/CASE.json"),
])
async def test_a_client_id_differing_from_the_url_is_refused(
        served_as: str, claimed: str, repository: ClientRepository, docs: DocumentServer, tls: TlsFiles) -> None:
    url = docs.url(served_as)
    docs.serve_document(served_as, client_id=docs.url(claimed))
    with pytest.raises(ClientDocumentRefused, match="not exactly its URL"):
        await resolver_for(repository, tls).resolve(url)
    assert await repository.get(url) is None


async def test_a_client_id_differing_by_host_case_is_refused(
        repository: ClientRepository, docs: DocumentServer, tls: TlsFiles) -> None:
    url = docs.serve_document("/hostcase.json", host="LOCALHOST")
    with pytest.raises(ClientDocumentRefused, match="not exactly its URL"):
        await resolver_for(repository, tls, allowed_domains=("localhost",)).resolve(
            docs.url("/hostcase.json", "localhost"))
    assert url != docs.url("/hostcase.json", "localhost")


@pytest.mark.parametrize(("fields", "problem"), [
    ({"client_name": None}, "no client_name"),
    ({"redirect_uris": None}, "no redirect_uris"),
    ({"redirect_uris": []}, "non-empty list"),
    ({"redirect_uris": "http://127.0.0.1:9/cb"}, "non-empty list"),
    ({"redirect_uris": ["http://127.0.0.1:9/cb#frag"]}, "must not have a fragment"),
    ({"redirect_uris": ["javascript:alert(1)"]}, "never a redirect URI"),
    ({"redirect_uris": ["http://evil.example.com/cb"]}, "only on a loopback address"),
    ({"redirect_uris": ["https://*.example.com/cb"]}, "wildcards"),
    ({"application_type": "web"}, "https redirect URIs only"),
    ({"application_type": "desktop"}, "application_type must be one of"),
    ({"token_endpoint_auth_method": "client_secret_basic"}, "shared secret"),
    ({"token_endpoint_auth_method": "client_secret_post"}, "shared secret"),
    ({"client_secret": "hunter2"}, "must not carry a client_secret"),
    ({"token_endpoint_auth_method": "private_key_jwt"}, "exactly one of jwks or jwks_uri"),
    ({"grant_types": ["authorization_code", "password"]}, "not available"),
    # Acting for others needs a key, as acting as oneself does.
    ({"grant_types": ["authorization_code", "urn:ietf:params:oauth:grant-type:token-exchange"]}, "not available"),
    ({"grant_types": ["client_credentials"]}, "not available"),
])
async def test_documents_breaking_the_rules_are_refused(
        fields: dict[str, Any], problem: str, repository: ClientRepository, docs: DocumentServer,
        tls: TlsFiles) -> None:
    url = docs.serve_document("/rules.json", **fields)
    with pytest.raises(ClientDocumentRefused, match=problem):
        await resolver_for(repository, tls).resolve(url)


async def test_a_document_that_is_not_an_object_is_refused(
        repository: ClientRepository, docs: DocumentServer, tls: TlsFiles) -> None:
    url = docs.serve("/array.json", [1, 2, 3])  # type: ignore[arg-type]
    with pytest.raises(ClientDocumentRefused, match="not a JSON object"):
        await resolver_for(repository, tls).resolve(url)


async def test_private_key_jwt_keys_are_kept_on_the_client(
        repository: ClientRepository, docs: DocumentServer, tls: TlsFiles) -> None:
    jwks = {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}]}
    grants = ["authorization_code", "client_credentials", "urn:ietf:params:oauth:grant-type:token-exchange"]
    url = docs.serve_document("/pkjwt.json", token_endpoint_auth_method="private_key_jwt", jwks=jwks,
                              grant_types=grants)
    client = await resolver_for(repository, tls).resolve(url)
    assert client.token_endpoint_auth_method == "private_key_jwt" and client.jwks == jwks
    assert client.grant_types == tuple(grants)
    stored = await repository.get(url)
    assert stored is not None and stored.jwks == jwks


@pytest.mark.parametrize(("client_id", "problem"), [
    ("https://clients.example.com/app.json#x", "fragment"),
    ("https://user@clients.example.com/app.json", "user name"),
    ("https://clients.example.com", "must have a path"),
    ("https://clients.example.com/", "must have a path"),
    ("https://clients.example.com/a/../b.json", r"\.\. path segments"),
    ("https://clients.example.com/" + "a" * 250, "at most 255"),
    ("http://clients.example.com/app.json", "must use https"),
])
def test_client_id_urls_breaking_the_rules_are_refused(client_id: str, problem: str) -> None:
    with pytest.raises(ClientDocumentRefused, match=problem):
        check_client_id_url(client_id, development_mode=True)


async def test_a_denied_domain_is_refused_without_fetching(
        repository: ClientRepository, docs: DocumentServer, tls: TlsFiles) -> None:
    url = docs.serve_document("/denied.json")
    with pytest.raises(ClientDocumentRefused, match="refused by this server"):
        await resolver_for(repository, tls, denied_domains=("127.0.0.1",)).resolve(url)
    assert docs.hits.get("/denied.json", 0) == 0


async def test_an_unknown_domain_is_refused_without_fetching_by_default(
        repository: ClientRepository, docs: DocumentServer, tls: TlsFiles) -> None:
    url = docs.serve_document("/unknown.json")
    with pytest.raises(ClientDocumentRefused, match="not a domain this server accepts"):
        await resolver_for(repository, tls, allowed_domains=()).resolve(url)
    assert docs.hits.get("/unknown.json", 0) == 0


async def test_an_unknown_domain_under_approval_is_pending_and_the_admins_word_survives_refetches(
        repository: ClientRepository, docs: DocumentServer, tls: TlsFiles) -> None:
    url = docs.serve_document("/approval.json")
    resolver = resolver_for(repository, tls, allowed_domains=(), unknown_domains="approval")
    first = await resolver.resolve(url)
    assert (first.status, first.source) == ("pending", "document")
    assert (await repository.get(url)).status == "pending"  # type: ignore[union-attr]

    assert await repository.set_status(url, "active")  # what `deputy clients approve URL` does
    docs.serve_document("/approval.json", client_name="Renamed client")  # no-store: fetched again
    approved = await resolver.resolve(url)
    assert (approved.status, approved.client_name) == ("active", "Renamed client")
    assert (await repository.get(url)).status == "active"  # type: ignore[union-attr]

    assert await repository.set_status(url, "denied")
    hits = docs.hits["/approval.json"]
    denied = await resolver.resolve(url)
    assert denied.status == "denied"
    assert docs.hits["/approval.json"] == hits, "a denied client's document is not fetched"


async def test_redirect_uris_always_come_from_the_document(
        repository: ClientRepository, docs: DocumentServer, tls: TlsFiles) -> None:
    url = docs.serve_document("/moving.json", redirect_uris=["http://127.0.0.1:9/old"])
    resolver = resolver_for(repository, tls)
    assert (await resolver.resolve(url)).redirect_uris == ("http://127.0.0.1:9/old",)
    docs.serve_document("/moving.json", redirect_uris=["http://127.0.0.1:9/new"])
    assert (await resolver.resolve(url)).redirect_uris == ("http://127.0.0.1:9/new",)
    assert (await repository.get(url)).redirect_uris == ("http://127.0.0.1:9/new",)  # type: ignore[union-attr]


async def test_documents_are_cached_per_cache_control_within_bounds(
        repository: ClientRepository, docs: DocumentServer, tls: TlsFiles) -> None:
    url = docs.url("/cached.json")
    document = {"client_id": url, "client_name": "Cached", "redirect_uris": ["http://127.0.0.1:9/callback"]}
    docs.serve("/cached.json", document, headers={"Cache-Control": "public, max-age=600"})
    docs.hits.pop("/cached.json", None)
    resolver = resolver_for(repository, tls, cache_max_seconds=300)
    now = [1000.0]
    resolver.clock = lambda: now[0]
    await resolver.resolve(url)
    await resolver.resolve(url)
    assert docs.hits["/cached.json"] == 1, "served from the cache"
    now[0] += 301  # max-age=600 clamped to cache_max_seconds=300
    await resolver.resolve(url)
    assert docs.hits["/cached.json"] == 2

    docs.serve("/cached.json", document, headers={"Cache-Control": "no-store"})
    now[0] += 1000
    await resolver.resolve(url)
    await resolver.resolve(url)
    assert docs.hits["/cached.json"] == 4, "no-store with cache_min_seconds=0: fetched every time"


async def test_a_refused_fetch_names_the_reason_without_the_internal_address(
        repository: ClientRepository, connections: Connections) -> None:
    policy = ClientDocumentPolicy(allowed_domains=("internal.example.com",))
    fake = FakeResolver({"internal.example.com": ["10.9.8.7"]})
    resolver = ClientDocumentResolver(policy, repository, DocumentFetcher(
        max_bytes=policy.max_bytes, timeout_seconds=1, resolver=fake))
    with pytest.raises(ClientDocumentRefused) as refused:
        await resolver.resolve("https://internal.example.com/app.json")
    assert str(refused.value) == NOT_FETCHED, "neither the address nor that it is private"
    assert connections.attempts == []


class FailingResolver:
    """A name service that fails as getaddrinfo does, with the resolver's own words."""

    async def resolve(self, host: str, port: int) -> Sequence[str]:
        raise NameNotResolved(f"{host} could not be resolved: [Errno -3] Temporary failure in name resolution")


LEAKS = ("10.9.8.7", "10.", "private", "resolv", "errno", "name or service", "gaierror", "temporary failure",
         "address")


@pytest.mark.parametrize("name_service", ["private address", "no such name (system resolver)", "resolver failure"])
async def test_a_document_that_cannot_be_fetched_is_refused_with_a_generic_reason(
        repository: ClientRepository, connections: Connections, caplog: pytest.LogCaptureFixture,
        name_service: str) -> None:
    """Issue 11 (finding 8): the answer about a fetched document must not map the network (addresses, resolver
    text); the details go to the log at INFO at most."""
    host = "no-such-client.invalid" if name_service.startswith("no such") else "internal.example.com"
    policy = ClientDocumentPolicy(allowed_domains=(host,))
    name_services: dict[str, HostResolver | None] = {
        "private address": FakeResolver({host: ["10.9.8.7"]}), "no such name (system resolver)": None,
        "resolver failure": FailingResolver()}
    resolver = ClientDocumentResolver(policy, repository, DocumentFetcher(
        max_bytes=policy.max_bytes, timeout_seconds=5, resolver=name_services[name_service]))
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ClientDocumentRefused) as refused:
        await resolver.resolve(f"https://{host}/app.json")
    assert str(refused.value) == NOT_FETCHED
    assert not [leak for leak in LEAKS if leak in str(refused.value).lower()]
    assert connections.attempts == []
    details = [r for r in caplog.records if r.name == "deputy.oauth.client_documents"]
    assert details and all(r.levelno <= logging.INFO for r in details)


async def test_a_jwks_uri_that_cannot_be_fetched_is_refused_with_a_generic_reason(
        connections: Connections, caplog: pytest.LogCaptureFixture) -> None:
    policy = ClientDocumentPolicy()
    keys = ClientKeys(policy, DocumentFetcher(
        max_bytes=policy.max_bytes, timeout_seconds=5, resolver=FakeResolver({"keys.example.com": ["10.9.8.7"]})),
        check_client_jwks)
    client = Client(client_id="https://app.example.com/client.json", client_name="app", redirect_uris=(),
                    grant_types=("client_credentials",), token_endpoint_auth_method="private_key_jwt",
                    application_type="web", source="document", created_at=0,
                    jwks_uri="https://keys.example.com/jwks.json")
    caplog.set_level(logging.DEBUG)
    with pytest.raises(InvalidClient) as refused:
        await keys.keys(client)
    assert not [leak for leak in LEAKS if leak in refused.value.description.lower()]
    assert all(r.levelno <= logging.INFO for r in caplog.records if r.name.startswith("deputy.oauth"))


@pytest.mark.parametrize(("cache_control", "expires", "date", "lifetime"), [
    ("max-age=120", None, None, 120),
    ("public, max-age=999999", None, None, 3600),  # clamped to the maximum
    ("max-age=1", None, None, 60),  # clamped to the minimum
    ("no-store, max-age=600", None, None, 60),
    (None, "Thu, 01 Jan 2026 00:10:00 GMT", "Thu, 01 Jan 2026 00:00:00 GMT", 600),
    (None, "not a date", None, 60),
    (None, None, None, 60),
])
def test_cache_lifetime_follows_the_headers_within_bounds(
        cache_control: str | None, expires: str | None, date: str | None, lifetime: float) -> None:
    fetched = FetchedDocument(url="https://a.example/x", value={}, cache_control=cache_control, expires=expires,
                              date=date)
    assert cache_lifetime(fetched, 60, 3600, clock.wall()) == lifetime


def test_ca_file_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"client_documents\.ca_file: "):
        client_document_policy({"ca_file": str(tmp_path / "missing.pem")})
    (tmp_path / "ca.pem").write_text("")
    assert client_document_policy({"ca_file": str(tmp_path / "ca.pem")}).ca_file == str(tmp_path / "ca.pem")
