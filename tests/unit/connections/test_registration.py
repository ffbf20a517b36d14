"""Who Deputy is at an upstream's authorization server (issue 15, item 1; MCP 2026-07-28 "Client Registration"):
configured → client ID metadata document → RFC 7591, the token endpoint authentication chosen from what the server
lists, hostile registration responses refused, a registered client kept per (server, issuer).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from deputy.config import UpstreamServer
from deputy.config_connections import UpstreamOAuth
from deputy.connections.errors import ConnectionFailed
from deputy.connections.model import AuthorizationServer, UpstreamClient, UpstreamProtection
from deputy.connections.redirect_uris import RedirectUris
from deputy.connections.registration import Registration
from deputy.connections.upstream_http import UpstreamHttp
from tests.unit.connections.upstream_site import Answer, UpstreamSite, server_for, upstream_site

DEPUTY = RedirectUris("https://deputy.example")
REDIRECT_URI = "https://deputy.example/connect/callback/tracker"  # server_for's "tracker": its own (RFC 9700 §4.4.2)
SHARED_REDIRECT_URI = "https://deputy.example/connect/callback"  # every server's, before
DOCUMENT_URL = "https://deputy.example/oauth/upstream-client.json"


class Clients:
    def __init__(self) -> None:
        self.kept: dict[tuple[str, str], tuple[UpstreamClient, str]] = {}

    async def registered(self, server: str, issuer: str, redirect_uri: str | None) -> UpstreamClient | None:
        kept = self.kept.get((server, issuer))
        return kept[0] if kept is not None and redirect_uri in (None, kept[1]) else None

    async def remember(self, server: str, issuer: str, client: UpstreamClient, redirect_uri: str) -> None:
        self.kept[(server, issuer)] = (client, redirect_uri)


@pytest.fixture
async def site() -> AsyncIterator[UpstreamSite]:
    async with upstream_site() as served:
        yield served


def protection(site: UpstreamSite, issuer: str | None = None, **changes: Any) -> UpstreamProtection:
    issuer = issuer or site.base
    fields: dict[str, Any] = {"issuer": issuer, "authorization_endpoint": f"{site.base}/authorize",
                              "token_endpoint": f"{site.base}/token", "registration_endpoint": f"{site.base}/register",
                              **changes}
    return UpstreamProtection(site.mcp_url, AuthorizationServer(**fields), ("mcp:read",))


def registration(store: Clients | None = None, document_url: str | None = DOCUMENT_URL) -> Registration:
    return Registration(UpstreamHttp(), store or Clients(), redirect_uris=DEPUTY,
                        metadata_document_url=document_url)


async def refused(site: UpstreamSite, **changes: Any) -> ConnectionFailed:
    with pytest.raises(ConnectionFailed) as info:
        await registration().client(server_for(site), protection(site, **changes))
    return info.value


# --- mix-up (RFC 9700 §4.4): each server's own redirect URI; the metadata document only where iss is sent ---------

async def test_a_registration_is_made_with_the_servers_own_redirect_uri(site: UpstreamSite) -> None:
    store = Clients()
    await registration(store).client(server_for(site), protection(site))
    [request] = site.requests("/register")
    assert request.document["redirect_uris"] == [REDIRECT_URI]
    assert store.kept[("tracker", site.base)][1] == REDIRECT_URI


async def test_a_client_registered_with_the_shared_redirect_uri_is_registered_again_not_used(
        site: UpstreamSite) -> None:
    """An older version registered every server's client with the one shared redirect URI: that client is what
    a mix-up abuses (the honest server accepts it at the shared URI), so it is replaced, never presented."""
    store = Clients()
    old = UpstreamClient("registered-for-the-shared-uri", None, "none", "registered")
    store.kept[("tracker", site.base)] = (old, SHARED_REDIRECT_URI)
    client = await registration(store).client(server_for(site), protection(site))
    assert client.client_id == "registered-client" and len(site.requests("/register")) == 1
    assert store.kept[("tracker", site.base)] == (client, REDIRECT_URI)


async def test_an_authorization_server_without_iss_is_not_given_the_metadata_document(site: UpstreamSite) -> None:
    """The document is Deputy at every server, listing every redirect URI: without RFC 9207 iss another server's
    answer could not be told from this one's. Registration instead."""
    client = await registration().client(server_for(site), protection(
        site, client_id_metadata_document_supported=True, iss_parameter_supported=False))
    assert client.source == "registered" and client.client_id != DOCUMENT_URL
    assert len(site.requests("/register")) == 1


async def test_without_iss_or_registration_connecting_is_refused_saying_what_would_work(site: UpstreamSite) -> None:
    failure = await refused(site, client_id_metadata_document_supported=True, iss_parameter_supported=False,
                            registration_endpoint=None)
    assert failure.reason == "registration_failed"
    assert "RFC 9207" in failure.detail and "client_id" in failure.detail and site.seen == []


async def test_a_connection_keeps_refreshing_with_the_client_it_was_made_with(site: UpstreamSite) -> None:
    """Refresh and revocation involve no authorization response (no mix-up): a connection made with a client
    registered with the shared redirect URI, or with the metadata document where iss is no longer sent, is served by
    that client, not cut off by a new registration; a client that is gone is replaced as for a new connection."""
    store = Clients()
    old = UpstreamClient("registered-for-the-shared-uri", None, "none", "registered")
    store.kept[("tracker", site.base)] = (old, SHARED_REDIRECT_URI)
    assert await registration(store).client_of(server_for(site), protection(site), old.client_id) == old
    document = await registration(store).client_of(server_for(site), protection(
        site, client_id_metadata_document_supported=True), DOCUMENT_URL)
    assert document == UpstreamClient(DOCUMENT_URL, None, "none", "metadata_document") and site.seen == []
    gone = await registration(store).client_of(server_for(site), protection(site), "a client nobody keeps")
    assert gone.client_id == "registered-client" and len(site.requests("/register")) == 1


# --- hostile or useless registration answers ----------------------------------------------------------------------

@pytest.mark.parametrize(("answer", "reason"), [
    (Answer(400, {"error": "invalid_client_metadata"}), "registration_failed"),
    (Answer(500, b"oops"), "registration_failed"),
    (Answer(201, b"not json"), "registration_failed"),
    (Answer(201, []), "registration_failed"),
    (Answer(201, {"client_secret": "s"}), "registration_failed"),  # no client_id
    (Answer(201, {"client_id": ""}), "registration_failed"),
    (Answer(201, {"client_id": "x" * 5000}), "registration_failed"),
    (Answer(201, {"client_id": 42}), "registration_failed"),
    (Answer(201, {"client_id": "c", "token_endpoint_auth_method": "client_secret_basic"}), "registration_failed"),
    (Answer(201, {"client_id": "c", "token_endpoint_auth_method": "tls_client_auth"}), "no_client_authentication"),
    (Answer(302, headers={"Location": "https://evil.example/register"}), "registration_failed"),
])
async def test_a_registration_answer_deputy_cannot_use_is_refused_and_not_kept(
        site: UpstreamSite, answer: Answer, reason: str) -> None:
    site.answers["/register"] = answer
    store = Clients()
    with pytest.raises(ConnectionFailed) as info:
        await registration(store).client(server_for(site), protection(site))
    assert info.value.reason == reason and store.kept == {}
    if answer.status == 400:
        assert info.value.error == "invalid_client_metadata"


async def test_an_authorization_server_without_registration_needs_a_configured_client(site: UpstreamSite) -> None:
    failure = await refused(site, registration_endpoint=None)
    assert failure.reason == "registration_failed" and "client_id" in failure.detail


async def test_an_authorization_server_with_no_authentication_deputy_has_is_refused_unasked(
        site: UpstreamSite) -> None:
    failure = await refused(site, token_endpoint_auth_methods=("private_key_jwt", "tls_client_auth"))
    assert failure.reason == "no_client_authentication" and site.requests("/register") == []


async def test_a_secret_is_not_kept_for_a_client_registered_as_public(site: UpstreamSite) -> None:
    site.answers["/register"] = Answer(201, {"client_id": "c", "client_secret": "s",
                                             "token_endpoint_auth_method": "none"})
    client = await registration().client(server_for(site), protection(site))
    assert (client.auth_method, client.client_secret) == ("none", None)


# --- a configured client, offered to another authorization server -------------------------------------------------

ATTACKER = "https://as.attacker.example"


@pytest.mark.parametrize("pinned", [None, "{base}"])
async def test_a_configured_client_is_never_presented_to_another_authorization_server(site: UpstreamSite,
                                                                                      pinned: str | None) -> None:
    """The upstream's metadata now names the attacker's server: the corporate client (and its secret) is not
    handed to it, whether the operator pinned another issuer or (a server built without the configuration's
    check) none."""
    server = server_for(site, client_id="corp-client", client_secret="corp-secret",
                        client_auth="client_secret_basic",
                        authorization_server=pinned.format(base=site.base) if pinned else None)
    with pytest.raises(ConnectionFailed) as info:
        await registration().client(server, protection(site, issuer=ATTACKER,
                                                       client_id_metadata_document_supported=True))
    assert info.value.reason == "authorization_server_not_allowed"
    assert "corp-secret" not in str(info.value) and site.seen == []


# --- the order of preference --------------------------------------------------------------------------------------

async def test_a_configured_client_comes_first(site: UpstreamSite) -> None:
    server = server_for(site, client_id="pre-registered", client_secret="pre-secret", client_auth="client_secret_post",
                        authorization_server=site.base)
    client = await registration().client(server, protection(site, client_id_metadata_document_supported=True))
    assert client == UpstreamClient("pre-registered", "pre-secret", "client_secret_post", "configured")
    assert site.seen == []


async def test_the_metadata_document_is_used_where_the_server_supports_it_and_sends_iss(site: UpstreamSite) -> None:
    client = await registration().client(server_for(site), protection(site, client_id_metadata_document_supported=True,
                                                                       iss_parameter_supported=True))
    assert client == UpstreamClient(DOCUMENT_URL, None, "none", "metadata_document")
    assert site.seen == []


@pytest.mark.parametrize("document_url", [None, "http://deputy.example/oauth/upstream-client.json",
                                          "https://deputy.example/"])
async def test_without_an_https_document_url_deputy_registers(site: UpstreamSite, document_url: str | None) -> None:
    client = await registration(document_url=document_url).client(
        server_for(site), protection(site, client_id_metadata_document_supported=True))
    assert client.source == "registered" and len(site.requests("/register")) == 1


@pytest.mark.parametrize(("offered", "chosen", "secret"), [
    (("client_secret_basic", "client_secret_post", "none"), "client_secret_basic", "registered-secret"),
    (("none", "client_secret_post"), "client_secret_post", "registered-secret"),
    (("none",), "none", None),
    (("private_key_jwt", "none"), "none", None),
])
async def test_the_strongest_listed_authentication_is_registered(site: UpstreamSite, offered: tuple[str, ...],
                                                                 chosen: str, secret: str | None) -> None:
    client = await registration().client(server_for(site), protection(site, token_endpoint_auth_methods=offered))
    assert client == UpstreamClient("registered-client", secret, chosen, "registered")
    [request] = site.requests("/register")
    assert request.document == {
        "client_name": "Deputy", "redirect_uris": [REDIRECT_URI], "grant_types": ["authorization_code",
                                                                                  "refresh_token"],
        "response_types": ["code"], "token_endpoint_auth_method": chosen, "application_type": "web"}


async def test_registration_names_every_scope_the_server_lists_so_a_step_up_can_be_granted(site: UpstreamSite
                                                                                          ) -> None:
    # An AS may hold a client to the scopes it registered: registered with the first challenge's scope only, the
    # client could never be granted a later step-up's (oidc-provider answers invalid_scope).
    await registration().client(server_for(site), protection(site, scopes_supported=("mcp:read", "mcp:admin",
                                                                                     "offline_access")))
    [request] = site.requests("/register")
    assert request.document["scope"] == "mcp:read mcp:admin offline_access"


async def test_registration_names_no_scope_when_the_server_lists_none(site: UpstreamSite) -> None:
    await registration().client(server_for(site), protection(site))
    [request] = site.requests("/register")
    assert "scope" not in request.document


async def test_a_registered_client_is_kept_per_server_and_issuer(site: UpstreamSite) -> None:
    store = Clients()
    first = await registration(store).client(server_for(site), protection(site))
    again = await registration(store).client(server_for(site), protection(site))
    assert again == first and len(site.requests("/register")) == 1
    site.answers["/register"] = Answer(201, {"client_id": "at-the-new-issuer", "token_endpoint_auth_method": "none"})
    moved = await registration(store).client(server_for(site), protection(site, issuer=f"{site.base}/new"))
    assert moved.client_id == "at-the-new-issuer" and len(site.requests("/register")) == 2
    assert set(store.kept) == {("tracker", site.base), ("tracker", f"{site.base}/new")}


def test_the_metadata_document_names_deputy_and_each_servers_redirect_uri() -> None:
    servers = [server_for_name("a"), server_for_name("b"), server_for_name(
        "c", client_id="corp", client_secret="s", client_auth="client_secret_basic", authorization_server="https://as")]
    assert registration().metadata_document(servers) == {
        "client_id": DOCUMENT_URL, "client_name": "Deputy",
        "redirect_uris": ["https://deputy.example/connect/callback/a", "https://deputy.example/connect/callback/b"],
        "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"],
        "token_endpoint_auth_method": "none", "application_type": "web"}


def server_for_name(name: str, **oauth: Any) -> UpstreamServer:
    return UpstreamServer(name=name, resource=f"https://deputy.example/mcp/{name}", title=name, scopes=(),
                          required_scopes=(), url="https://mcp.example/mcp", credentials="oauth",
                          oauth=UpstreamOAuth(**oauth))
