"""Requests to what an upstream names (issue 15, item 5): the SSRF-safe fetcher for every host the operator did not
vouch for, no redirect followed, bodies capped, time limited; and the upstream's own 401 challenge.

Attack classes: server-side request forgery (private, loopback, link-local, cloud metadata and IPv6-embedded
addresses; a name resolving to several addresses), open redirect, resource exhaustion (oversized and slow answers).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from deputy.connections.upstream_http import MAX_BYTES, Challenge, UpstreamHttp, UpstreamHttpError
from tests.unit.connections.upstream_site import HANG, Answer, Names, UpstreamSite, server_for, upstream_site


@pytest.fixture
async def site() -> AsyncIterator[UpstreamSite]:
    async with upstream_site() as served:
        yield served


def loopback_named(site: UpstreamSite, timeout: float = 10.0) -> UpstreamHttp:
    """Development mode, ``localhost`` resolving to the site: a host nobody trusted, through the fetcher."""
    return UpstreamHttp(development_mode=True, resolver=Names({"localhost": ["127.0.0.1"]}), timeout=timeout)


def elsewhere(site: UpstreamSite, path: str) -> str:
    return f"http://localhost:{site.port}{path}"


# --- SSRF: addresses Deputy never fetches from --------------------------------------------------------------------

@pytest.mark.parametrize("address", [
    "169.254.169.254", "fd00:ec2::254", "10.0.0.5", "192.168.1.1", "172.16.0.1", "100.64.0.1", "127.0.0.1", "::1",
    "fe80::1", "fd12::1", "::ffff:10.0.0.1", "64:ff9b::a9fe:a9fe", "0.0.0.0",
])
async def test_a_named_url_resolving_to_a_non_public_address_is_refused(site: UpstreamSite, address: str) -> None:
    http = UpstreamHttp(resolver=Names({"as.example": [address]}))
    with pytest.raises(UpstreamHttpError) as info:
        await http.get_json(server_for(site), "https://as.example/.well-known/oauth-authorization-server")
    assert info.value.kind == "refused"


async def test_one_private_address_among_public_ones_is_enough_to_refuse(site: UpstreamSite) -> None:
    http = UpstreamHttp(resolver=Names({"as.example": ["93.184.216.34", "10.1.2.3"]}))
    with pytest.raises(UpstreamHttpError) as info:
        await http.post_form(server_for(site), "https://as.example/token", {"grant_type": "refresh_token"})
    assert info.value.kind == "refused"


@pytest.mark.parametrize("url", [
    "https://169.254.169.254/latest/meta-data/", "https://[::ffff:169.254.169.254]/", "https://10.0.0.1/token",
    "http://as.example/token",  # http to a host nobody trusted
    "https://user:pass@as.example/token", "file:///etc/passwd", "gopher://as.example/",
])
async def test_urls_nobody_trusted_are_refused_before_any_request(site: UpstreamSite, url: str) -> None:
    http = UpstreamHttp(resolver=Names({"as.example": ["93.184.216.34"]}))
    with pytest.raises(UpstreamHttpError) as info:
        await http.get_json(server_for(site), url)
    assert info.value.kind == "refused"


async def test_a_trusted_host_is_fetched_without_the_address_filter(site: UpstreamSite) -> None:
    """The operator vouched for 127.0.0.1: an internal authorization server, reached outside development mode."""
    http = UpstreamHttp()
    answer = await http.get_json(server_for(site), f"{site.base}/.well-known/oauth-authorization-server")
    assert answer.status == 200 and answer.document["issuer"] == site.base


async def test_another_port_on_the_upstreams_host_is_not_the_upstreams(site: UpstreamSite) -> None:
    """The configured URL's origin is the operator's; the same host on another port is some other service."""
    server = server_for(site, trusted_hosts=frozenset())
    http = UpstreamHttp()
    assert http.trusted(server, f"{site.base}/.well-known/oauth-protected-resource/mcp")
    assert not http.trusted(server, f"http://127.0.0.1:{site.port + 1}/token")
    with pytest.raises(UpstreamHttpError) as info:
        await http.get_json(server, f"http://127.0.0.1:{site.port + 1}/token")
    assert info.value.kind == "refused"


async def test_a_trusted_host_over_http_is_accepted_on_loopback_only(site: UpstreamSite) -> None:
    server = server_for(site, trusted_hosts=frozenset({"as.internal", "127.0.0.1"}))
    http = UpstreamHttp()
    assert http.trusted(server, "https://as.internal/token")
    assert not http.trusted(server, "http://as.internal/token")
    assert http.trusted(server, f"http://127.0.0.1:{site.port + 1}/token")


# --- redirects, size, time ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("through_fetcher", [False, True])
async def test_a_redirect_is_refused_and_its_target_never_requested(site: UpstreamSite,
                                                                    through_fetcher: bool) -> None:
    site.answers["/prm"] = Answer(302, headers={"Location": f"{site.base}/target"})
    http = loopback_named(site) if through_fetcher else UpstreamHttp()
    url = elsewhere(site, "/prm") if through_fetcher else f"{site.base}/prm"
    with pytest.raises(UpstreamHttpError) as info:
        await http.get_json(server_for(site), url)
    assert info.value.kind == "refused" and "redirect" in info.value.message
    assert site.requests("/target") == []


@pytest.mark.parametrize("through_fetcher", [False, True])
async def test_an_oversized_answer_is_refused(site: UpstreamSite, through_fetcher: bool) -> None:
    site.answers["/big"] = Answer(body=b'{"a": "' + b"x" * MAX_BYTES + b'"}')
    http = loopback_named(site) if through_fetcher else UpstreamHttp()
    url = elsewhere(site, "/big") if through_fetcher else f"{site.base}/big"
    with pytest.raises(UpstreamHttpError) as info:
        await http.get_json(server_for(site), url)
    assert info.value.kind == "too_large"


@pytest.mark.parametrize("through_fetcher", [False, True])
async def test_a_server_that_never_answers_is_given_up_on(site: UpstreamSite, through_fetcher: bool) -> None:
    site.answers["/slow"] = HANG
    http = loopback_named(site, timeout=0.3) if through_fetcher else UpstreamHttp(timeout=0.3)
    url = elsewhere(site, "/slow") if through_fetcher else f"{site.base}/slow"
    with pytest.raises(UpstreamHttpError) as info:
        await http.post_form(server_for(site), url, {"a": "b"})
    assert info.value.kind == "unreachable"


async def test_a_post_through_the_fetcher_reaches_the_checked_address_with_its_form(site: UpstreamSite) -> None:
    answer = await loopback_named(site).post_form(server_for(site), elsewhere(site, "/token"), {"code": "c 1"},
                                                  {"Authorization": "Basic eDp5"})
    assert answer.status == 200 and answer.document["token_type"] == "Bearer"
    [seen] = site.requests("/token")
    assert seen.form == {"code": "c 1"} and seen.headers["authorization"] == "Basic eDp5"
    assert seen.headers["host"] == f"localhost:{site.port}"  # TLS and Host still name the URL's host


async def test_no_cookie_an_upstream_sets_is_sent_back(site: UpstreamSite) -> None:
    site.answers["/prm"] = Answer(body={}, headers={"Set-Cookie": "tracking=1; Path=/"})
    http = UpstreamHttp()
    await http.get_json(server_for(site), f"{site.base}/prm")
    await http.get_json(server_for(site), f"{site.base}/prm")
    assert all("cookie" not in seen.headers for seen in site.requests("/prm"))


async def test_a_body_that_is_not_json_is_no_document(site: UpstreamSite) -> None:
    site.answers["/html"] = Answer(body=b"<html>hi</html>", media_type="text/html")
    answer = await UpstreamHttp().get_json(server_for(site), f"{site.base}/html")
    assert answer.status == 200 and answer.document is None


# --- the upstream's challenge -------------------------------------------------------------------------------------

async def test_the_challenge_of_an_unauthenticated_initialize_is_read(site: UpstreamSite) -> None:
    site.challenge = f'Bearer error="invalid_token", scope="mcp:read mcp:write", resource_metadata="{site.base}/p"'
    challenge = await UpstreamHttp().challenge(server_for(site))
    assert challenge == Challenge(f"{site.base}/p", "mcp:read mcp:write", "invalid_token")
    [first] = site.requests("/mcp")
    assert first.document["method"] == "initialize" and "authorization" not in first.headers


async def test_an_upstream_that_lets_initialize_through_is_challenged_with_tools_list(site: UpstreamSite) -> None:
    site.initialize_allowed = True
    site.challenge = 'Bearer scope="mcp:basic"'
    assert await UpstreamHttp().challenge(server_for(site)) == Challenge(None, "mcp:basic", None)
    assert [seen.document["method"] for seen in site.requests("/mcp")] == ["initialize", "tools/list"]


async def test_an_upstream_without_a_challenge_gives_an_empty_one(site: UpstreamSite) -> None:
    site.challenge = None
    assert await UpstreamHttp().challenge(server_for(site)) == Challenge()


async def test_an_upstream_that_is_down_is_unreachable(site: UpstreamSite) -> None:
    server = server_for(site)
    server = type(server)(**{**{f: getattr(server, f) for f in server.__dataclass_fields__},
                             "url": "http://127.0.0.1:9/mcp"})
    with pytest.raises(UpstreamHttpError) as info:
        await UpstreamHttp(timeout=2).challenge(server)
    assert info.value.kind == "unreachable"
