"""Issue 12, finding 1: which request-time redirect URIs match a registered one, and which are "local".

RFC 8252 §7.3 / OAuth 2.1 §8.4.2: a loopback IP-literal redirect URI (``127.0.0.1``,
``[::1]``) matches with any port; everything else is an exact string match (OAuth 2.1
§2.3.1). Vectors: abuse cases first, then what must match.
"""

from __future__ import annotations

import pytest

from deputy.oauth.redirect_uris import matches_registered, owned_by_any_local_process

V4 = "http://127.0.0.1:4000/callback"
V6 = "http://[::1]:4000/callback"

REFUSED = [
    # (registered, requested, why)
    (V4, "http://127.0.0.2:4000/callback", "another loopback address"),
    (V4, "http://127.0.0.2:5000/callback", "another loopback address, other port"),
    (V4, "http://0.0.0.0:5000/callback", "the unspecified address"),
    (V4, "http://127.1:5000/callback", "short IPv4 form"),
    (V4, "http://2130706433:5000/callback", "decimal IPv4 form"),
    (V4, "http://0x7f000001:5000/callback", "hex IPv4 form"),
    (V4, "http://0x7f.0.0.1:5000/callback", "hex label"),
    (V4, "http://0177.0.0.1:5000/callback", "octal label"),
    (V4, "http://127.0.0.1.evil.com:5000/callback", "a host that starts like the literal"),
    (V4, "http://127.0.0.1.evil.com/callback", "a host that starts like the literal, no port"),
    (V4, "http://localhost:5000/callback", "localhost is another host"),
    (V4, "http://[::1]:5000/callback", "the other literal"),
    (V4, "http://[::ffff:127.0.0.1]:5000/callback", "IPv4-mapped IPv6"),
    (V4, "https://127.0.0.1:5000/callback", "another scheme"),
    (V4, "HTTP://127.0.0.1:5000/callback", "scheme spelled differently"),
    (V4, "http://127.0.0.1:5000/callback2", "another path"),
    (V4, "http://127.0.0.1:5000/callbac", "a path prefix"),
    (V4, "http://127.0.0.1:5000/callback/", "a longer path"),
    (V4, "http://127.0.0.1:5000/callback/../evil", "dot segments"),
    (V4, "http://127.0.0.1:5000/Callback", "path case"),
    (V4, "http://127.0.0.1:5000/callback?x=1", "an added query"),
    (V4, "http://127.0.0.1:5000/callback#x", "a fragment"),
    (V4, "http://127.0.0.1:5000@evil.com/callback", "userinfo: the real host is evil.com"),
    (V4, "http://127.0.0.1:5000\\@evil.com/callback", "backslash before userinfo"),
    (V4, "http://user@127.0.0.1:5000/callback", "userinfo before the literal"),
    (V4, "http://127.0.0.1:0/callback", "port 0"),
    (V4, "http://127.0.0.1:65536/callback", "port out of range"),
    (V4, "http://127.0.0.1:99999/callback", "port out of range"),
    (V4, "http://127.0.0.1:05000/callback", "leading zero"),
    (V4, "http://127.0.0.1:/callback", "empty port"),
    (V4, "http://127.0.0.1:+5000/callback", "signed port"),
    (V4, "http://127.0.0.1:5000 /callback", "whitespace"),
    (V4, "http://127.0.0.1:५०००/callback", "non-ASCII digits"),
    (V4, "http://127.0.0.1:5000/callback\n", "a trailing newline"),
    (V6, "http://[0:0:0:0:0:0:0:1]:5000/callback", "IPv6 written out"),
    (V6, "http://[::1%25lo]:5000/callback", "a zone id"),
    (V6, "http://[::1]:5000@evil.com/callback", "userinfo: the real host is evil.com"),
    (V6, "http://[::1]:5000/other", "another path"),
    # Not IP literals, or not loopback: exact only.
    ("http://localhost:4000/callback", "http://localhost:5000/callback", "localhost keeps its port"),
    ("https://127.0.0.1:4000/callback", "https://127.0.0.1:5000/callback", "https keeps its port"),
    ("https://app.example.com:4000/cb", "https://app.example.com:5000/cb", "other hosts keep their port"),
    ("http://127.0.0.2:4000/callback", "http://127.0.0.2:5000/callback", "only the two literals"),
    ("com.example.app:/cb", "com.example.app:/cb2", "private-use scheme"),
]

MATCHED = [
    (V4, V4),
    (V4, "http://127.0.0.1:5000/callback"),
    (V4, "http://127.0.0.1:1/callback"),
    (V4, "http://127.0.0.1:65535/callback"),
    (V4, "http://127.0.0.1/callback"),
    ("http://127.0.0.1/callback", "http://127.0.0.1:49152/callback"),
    ("http://127.0.0.1:4000/cb?app=x", "http://127.0.0.1:5000/cb?app=x"),
    ("http://127.0.0.1:4000", "http://127.0.0.1:5000"),
    (V6, "http://[::1]:5000/callback"),
    ("http://localhost:4000/callback", "http://localhost:4000/callback"),
    ("https://app.example.com/cb", "https://app.example.com/cb"),
]


@pytest.mark.parametrize(("registered", "requested", "why"), REFUSED, ids=[v[2] + " " + v[1] for v in REFUSED])
def test_only_the_port_of_a_loopback_ip_literal_may_differ(registered: str, requested: str, why: str) -> None:
    """Issue 12: the port wildcard never widens the host, scheme, path or query of a redirect URI."""
    assert not matches_registered(requested, [registered]), why


@pytest.mark.parametrize(("registered", "requested"), MATCHED)
def test_a_loopback_ip_literal_matches_any_port(registered: str, requested: str) -> None:
    """Issue 12: RFC 8252 §7.3 — a native app's listener port is chosen when it sends the request."""
    assert matches_registered(requested, ["https://unrelated.example/cb", registered])


def test_nothing_matches_an_empty_registration() -> None:
    assert not matches_registered(V4, [])


@pytest.mark.parametrize("uri", [
    "http://localhost:9/cb", "http://LOCALHOST./cb", "http://app.localhost:9/cb", "https://localhost/cb",
    "http://127.0.0.1:9/cb", "http://127.9.9.9/cb", "http://127.1/cb", "http://2130706433/cb",
    "http://0x7f.1/cb", "http://[::1]:9/cb", "http://[::ffff:127.0.0.1]/cb", "http://0.0.0.0:9/cb",
    "https://127.0.0.1/cb", "com.example.app:/cb", "com.example.app://host/cb", "http:cb",
])
def test_redirects_any_local_process_could_own(uri: str) -> None:
    """Issue 12: loopback in any spelling a browser reads, and private-use schemes (RFC 8252 §8.6)."""
    assert owned_by_any_local_process(uri)


@pytest.mark.parametrize("uri", [
    "https://app.example.com/cb", "https://127.0.0.1.example.com/cb", "https://localhost.example.com/cb",
    "https://10.0.0.1/cb",
])
def test_redirects_a_host_owner_controls(uri: str) -> None:
    assert not owned_by_any_local_process(uri)
