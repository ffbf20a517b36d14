"""Redirect URI rules by application type (RFC 8252 §7, RFC 6749 §3.1.2) and the registration rate limiter."""

from __future__ import annotations

import pytest

from deputy.oauth.errors import InvalidRedirectUri
from deputy.oauth.redirect_uris import check_redirect_uri
from deputy.rate_limit import SlidingWindowLimiter

ACCEPTED = [
    ("native", "http://127.0.0.1:8080/cb"), ("native", "http://[::1]/cb"), ("native", "http://localhost:1/cb"),
    ("native", "https://app.example.com/cb"), ("native", "com.example.app:/oauth2redirect"),
    ("native", "https://app.example.com/cb?x=1"), ("web", "https://app.example.com/cb"),
    ("web", "https://[2001:db8::1]:8443/cb"),
]
REFUSED = [
    ("native", "javascript:alert(1)"), ("native", "data:text/html,x"), ("native", "file:///etc/passwd"),
    ("native", "http://app.example.com/cb"), ("native", "http://127.0.0.1.nip.io/cb"), ("native", "myapp:/cb"),
    ("native", "https://a.example/cb#x"), ("native", "https://*.example.com/cb"), ("native", "https://u@a.example/"),
    ("native", "/relative/cb"), ("native", "https://a.example:99999/cb"), ("native", "https://a.example/c b"),
    ("web", "http://127.0.0.1/cb"), ("web", "com.example.app:/cb"), ("native", "https://exa_mple.com/cb"),
]


@pytest.mark.parametrize(("application_type", "uri"), ACCEPTED)
def test_accepted(application_type: str, uri: str) -> None:
    check_redirect_uri(uri, application_type)


@pytest.mark.parametrize(("application_type", "uri"), REFUSED)
def test_refused(application_type: str, uri: str) -> None:
    with pytest.raises(InvalidRedirectUri):
        check_redirect_uri(uri, application_type)


def test_limiter_admits_per_minute_then_says_when() -> None:
    now = [1000.0]
    limiter = SlidingWindowLimiter(2, clock=lambda: now[0])
    assert limiter.admit("a") is None and limiter.admit("a") is None
    now[0] += 10
    assert limiter.admit("a") == pytest.approx(50.0)
    assert limiter.admit("b") is None  # per address
    now[0] += 50.5
    assert limiter.admit("a") is None
    assert SlidingWindowLimiter.retry_after(0.2) == "1"
