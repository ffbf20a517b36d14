"""Discovering an upstream's authorization server (issue 15, items 1 and 5; MCP 2026-07-28 "Authorization Server
Discovery"): hostile protected resource metadata and authorization server metadata first, then the specification's
order, scope selection, pinning, caching and the 2025-03-26 fallback.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from deputy.connections.discovery import Discovery
from deputy.connections.errors import ConnectionFailed
from deputy.connections.upstream_http import UpstreamHttp
from tests.unit.connections.upstream_site import Answer, Names, UpstreamSite, server_for, upstream_site

PRM_PATH = "/.well-known/oauth-protected-resource/mcp"
AS_PATH = "/.well-known/oauth-authorization-server"


@pytest.fixture
async def site() -> AsyncIterator[UpstreamSite]:
    async with upstream_site() as served:
        yield served


def discovery(names: dict[str, list[str]] | None = None) -> Discovery:
    return Discovery(UpstreamHttp(resolver=Names(names or {})))


async def refused(site: UpstreamSite, **oauth: Any) -> ConnectionFailed:
    with pytest.raises(ConnectionFailed) as info:
        await discovery({"evil.test": ["10.0.0.7"], "as.example": ["93.184.216.34"]}).protection(
            server_for(site, **oauth))
    return info.value


def paths(site: UpstreamSite) -> list[str]:
    return [seen.path for seen in site.seen if seen.method == "GET"]


# --- protected resource metadata for someone else -----------------------------------------------------------------

@pytest.mark.parametrize("resource", [
    "https://evil.example.com/mcp", "http://127.0.0.1:1/mcp", "{base}/other", "{base}/mcp/deeper", "{base}/mc",
    "{base}/mcp?x=1", "", None, 42,
])
async def test_metadata_for_another_resource_is_refused_before_any_authorization_server(
        site: UpstreamSite, resource: Any) -> None:
    assert site.prm is not None
    site.prm["resource"] = resource.format(base=site.base) if isinstance(resource, str) else resource
    failure = await refused(site)
    assert failure.reason == ("resource_mismatch" if isinstance(resource, str) and resource else "discovery_failed")
    assert AS_PATH not in paths(site)


@pytest.mark.parametrize("document", [
    b"not json", b"[]", {"resource": "{mcp}"}, {"resource": "{mcp}", "authorization_servers": []},
    {"resource": "{mcp}", "authorization_servers": "https://as.example"},
    {"resource": "{mcp}", "authorization_servers": ["javascript:alert(1)"]},
])
async def test_protected_resource_metadata_that_is_not_usable_is_refused(site: UpstreamSite,
                                                                        document: Any) -> None:
    if isinstance(document, dict):
        document = {k: v.format(mcp=site.mcp_url) if isinstance(v, str) else v for k, v in document.items()}
    site.answers[PRM_PATH] = Answer(body=document)
    assert (await refused(site)).reason == "discovery_failed"


async def test_a_resource_metadata_url_at_a_private_address_is_not_fetched(site: UpstreamSite) -> None:
    site.challenge = 'Bearer resource_metadata="https://evil.test/prm"'
    failure = await refused(site)
    assert failure.reason == "fetch_refused" and "10.0.0.7" in failure.detail


async def test_an_authorization_server_at_a_private_address_is_not_fetched(site: UpstreamSite) -> None:
    assert site.prm is not None
    site.prm["authorization_servers"] = ["https://evil.test"]
    assert (await refused(site)).reason == "fetch_refused"


async def test_a_pinned_authorization_server_refuses_any_other(site: UpstreamSite) -> None:
    failure = await refused(site, authorization_server="https://as.pinned.example")
    assert failure.reason == "authorization_server_not_allowed"
    assert AS_PATH not in paths(site)


async def test_a_configured_client_without_a_pinned_authorization_server_follows_none(site: UpstreamSite) -> None:
    """A configured client is registered at one authorization server; without knowing which (a server built
    without the configuration's check), Deputy follows whatever the upstream names to none of them."""
    failure = await refused(site, client_id="corp-client", client_secret="corp-secret",
                            client_auth="client_secret_basic")
    assert failure.reason == "authorization_server_not_allowed"
    assert AS_PATH not in paths(site)


# --- authorization server metadata that is not to be believed -----------------------------------------------------

@pytest.mark.parametrize("issuer", ["https://attacker.example.com", "{base}/tenant", "HTTP://127.0.0.1:{port}",
                                    "http://localhost:{port}", None])
async def test_metadata_for_another_issuer_is_refused(site: UpstreamSite, issuer: str | None) -> None:
    assert site.metadata is not None
    site.metadata["issuer"] = issuer.format(base=site.base, port=site.port) if issuer else None
    assert (await refused(site)).reason == "issuer_mismatch"


async def test_a_root_issuers_trailing_slash_is_the_only_difference_forgiven(site: UpstreamSite) -> None:
    """RFC 8414 §3.3 compares strings; ``mcp.client.auth.utils.issuers_match`` forgives only a root issuer's slash
    (servers built on pydantic URLs publish one), and the metadata's own spelling is then the issuer recorded."""
    assert site.metadata is not None
    site.metadata["issuer"] = f"{site.base}/"
    found = await discovery().protection(server_for(site))
    assert found.authorization_server.issuer == f"{site.base}/"


@pytest.mark.parametrize("methods", [None, [], ["plain"], "S256", ["s256"]])
async def test_an_authorization_server_that_does_not_advertise_s256_is_refused(site: UpstreamSite,
                                                                               methods: Any) -> None:
    assert site.metadata is not None
    site.metadata["code_challenge_methods_supported"] = methods
    if methods is None:
        del site.metadata["code_challenge_methods_supported"]
    assert (await refused(site)).reason == ("discovery_failed" if isinstance(methods, str) else "pkce_unsupported")


@pytest.mark.parametrize("member", ["authorization_endpoint", "token_endpoint", "registration_endpoint",
                                    "revocation_endpoint", "jwks_uri"])
@pytest.mark.parametrize("url", ["https://evil.example/x", "https://127.0.0.1.evil.example/x", "/relative",
                                 "{base}/x#fragment", "https://user@127.0.0.1/x"])
async def test_endpoints_on_unexpected_hosts_are_refused(site: UpstreamSite, member: str, url: str) -> None:
    assert site.metadata is not None
    site.metadata[member] = url.format(base=site.base)
    assert (await refused(site)).reason == "endpoint_refused"


async def test_an_endpoint_on_a_trusted_host_is_accepted_over_https_only(site: UpstreamSite) -> None:
    assert site.metadata is not None
    site.metadata["token_endpoint"] = "https://as.internal/token"
    trusted = frozenset({"127.0.0.1", "as.internal"})
    found = await discovery().protection(server_for(site, trusted_hosts=trusted))
    assert found.authorization_server.token_endpoint == "https://as.internal/token"
    site.metadata["token_endpoint"] = "http://as.internal/token"
    assert (await refused(site, trusted_hosts=trusted)).reason == "endpoint_refused"


async def test_a_required_endpoint_missing_is_refused(site: UpstreamSite) -> None:
    assert site.metadata is not None
    del site.metadata["token_endpoint"]
    assert (await refused(site)).reason == "endpoint_refused"


async def test_no_metadata_anywhere_is_a_discovery_failure_not_a_guess(site: UpstreamSite) -> None:
    """2025-03-26's last fallback (/authorize, /token with no metadata) is not followed: nothing says S256."""
    site.prm = None
    site.metadata = None
    failure = await refused(site)
    assert failure.reason == "discovery_failed"
    assert not any(seen.path in ("/authorize", "/token", "/register") for seen in site.seen)


async def test_a_failure_is_not_cached(site: UpstreamSite) -> None:
    assert site.metadata is not None
    site.metadata["issuer"] = "https://attacker.example.com"
    finder = discovery()
    with pytest.raises(ConnectionFailed):
        await finder.protection(server_for(site))
    site.metadata["issuer"] = site.base
    assert (await finder.protection(server_for(site))).authorization_server.issuer == site.base


# --- the specification's order ------------------------------------------------------------------------------------

async def test_the_challenges_metadata_url_comes_first_and_its_resource_is_kept_as_published(
        site: UpstreamSite) -> None:
    site.challenge = f'Bearer resource_metadata="{site.base}/custom/prm.json"'
    published = f"HTTP://127.0.0.1:{site.port}/mcp/"
    site.answers["/custom/prm.json"] = Answer(body={"resource": published, "authorization_servers": [site.base]})
    found = await discovery().protection(server_for(site))
    assert found.resource == published
    assert paths(site) == ["/custom/prm.json", AS_PATH]


async def test_without_a_header_the_path_inserted_then_the_root_well_known_url_is_tried(site: UpstreamSite) -> None:
    site.challenge = None
    site.prm = None
    site.answers["/.well-known/oauth-protected-resource"] = Answer(
        body={"resource": site.base, "authorization_servers": [site.base]})  # the origin: a parent of /mcp
    found = await discovery().protection(server_for(site))
    assert found.resource == site.base
    assert paths(site) == [PRM_PATH, "/.well-known/oauth-protected-resource", AS_PATH]


async def test_an_issuer_with_a_path_is_looked_up_in_the_specifications_order(site: UpstreamSite) -> None:
    issuer = f"{site.base}/tenant1"
    assert site.prm is not None and site.metadata is not None
    site.prm["authorization_servers"] = [issuer]
    site.answers["/tenant1/.well-known/openid-configuration"] = Answer(body={**site.metadata, "issuer": issuer})
    found = await discovery().protection(server_for(site))
    assert found.authorization_server.issuer == issuer
    assert paths(site)[1:] == ["/.well-known/oauth-authorization-server/tenant1",
                               "/.well-known/openid-configuration/tenant1", "/tenant1/.well-known/openid-configuration"]


async def test_the_pinned_issuer_is_chosen_among_those_listed(site: UpstreamSite) -> None:
    assert site.prm is not None
    site.prm["authorization_servers"] = ["https://other.example", site.base]
    found = await discovery().protection(server_for(site, authorization_server=site.base))
    assert found.authorization_server.issuer == site.base


async def test_the_authorization_servers_metadata_is_read(site: UpstreamSite) -> None:
    found = await discovery().protection(server_for(site))
    server = found.authorization_server
    assert (server.issuer, server.token_endpoint, server.registration_endpoint, server.revocation_endpoint) == (
        site.base, f"{site.base}/token", f"{site.base}/register", f"{site.base}/revoke")
    assert server.iss_parameter_supported and not server.client_id_metadata_document_supported
    assert server.token_endpoint_auth_methods == ("client_secret_basic", "client_secret_post", "none")


async def test_the_2025_03_26_revision_the_upstreams_origin_is_its_authorization_server(site: UpstreamSite) -> None:
    site.prm = None
    found = await discovery().protection(server_for(site))
    assert found.resource == site.mcp_url and found.authorization_server.issuer == site.base
    assert found.scopes is None


# --- scopes -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("configured", "challenged", "published", "listed", "expected"), [
    (("ops",), "mcp:a", ["mcp:p"], ["offline_access"], ("ops",)),  # the operator's, exactly
    (None, "mcp:a mcp:b mcp:a", ["mcp:p"], None, ("mcp:a", "mcp:b")),
    (None, None, ["mcp:p"], None, ("mcp:p",)),
    (None, None, None, ["mcp:x"], None),  # omitted: not the AS's list
    (None, "mcp:a", None, ["mcp:a", "offline_access"], ("mcp:a", "offline_access")),  # SEP-2207
    (None, None, ["mcp:p"], ["mcp:p"], ("mcp:p",)),  # no offline_access where the AS does not list it
    (None, None, None, ["offline_access"], None),  # nothing to add it to
])
async def test_scopes_are_chosen_in_the_specifications_order(
        site: UpstreamSite, configured: tuple[str, ...] | None, challenged: str | None, published: list[str] | None,
        listed: list[str] | None, expected: tuple[str, ...] | None) -> None:
    assert site.prm is not None and site.metadata is not None
    site.challenge = (f'Bearer resource_metadata="{site.base}{PRM_PATH}"'
                      + (f', scope="{challenged}"' if challenged else ""))
    site.prm.pop("scopes_supported")
    if published is not None:
        site.prm["scopes_supported"] = published
    if listed is not None:
        site.metadata["scopes_supported"] = listed
    found = await discovery().protection(server_for(site, scopes=configured))
    assert found.scopes == expected


async def test_a_step_up_asks_for_the_union_and_is_not_cached(site: UpstreamSite) -> None:
    site.challenge = f'Bearer resource_metadata="{site.base}{PRM_PATH}", scope="mcp:read"'
    finder = discovery()
    stepped = await finder.protection(server_for(site), scope_challenge="mcp:write mcp:read")
    assert stepped.scopes == ("mcp:read", "mcp:write")
    assert (await finder.protection(server_for(site))).scopes == ("mcp:read",)


# --- cache --------------------------------------------------------------------------------------------------------

async def test_what_was_found_is_cached_until_forgotten(site: UpstreamSite) -> None:
    finder = discovery()
    first = await finder.protection(server_for(site))
    count = len(site.seen)
    assert await finder.protection(server_for(site)) == first and len(site.seen) == count
    assert site.prm is not None
    site.prm["authorization_servers"] = [f"{site.base}/moved"]
    site.answers["/.well-known/oauth-authorization-server/moved"] = Answer(
        body={**(site.metadata or {}), "issuer": f"{site.base}/moved"})
    finder.forget("tracker")
    assert (await finder.protection(server_for(site))).authorization_server.issuer == f"{site.base}/moved"
