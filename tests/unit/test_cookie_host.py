"""Which host a browser files cookies under, and the rule built on it (issue 11, finding 2).

Cookies are per host, not per port or scheme (RFC 6265 §8.5); the host is the browser's
serialisation of it (WHATWG URL §3.5-§3.7). A redirect URI on the host of ``public_url``
is refused in ``[[clients]]`` (start-up error naming the key) and in metadata documents;
CSRF tokens are bound to the browser and the form (:mod:`deputy.web.csrf`).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from deputy.config import ConfigError, load_settings
from deputy.cookie_scope import cookie_host, redirect_shares_cookies
from deputy.oauth.client_documents import ClientDocumentRefused, parse_document
from deputy.web.csrf import CsrfTokens, same_origin

SERVER = '[servers.demo]\nurl = "http://127.0.0.1:9000/mcp"\n'


@pytest.mark.parametrize(("url", "host"), [
    ("http://127.0.0.1:9/cb", "127.0.0.1"),
    ("https://127.0.0.1/cb", "127.0.0.1"),
    ("http://127.1:9/cb", "127.0.0.1"),
    ("http://2130706433/cb", "127.0.0.1"),
    ("http://0x7f.0.0.1/cb", "127.0.0.1"),
    ("http://0177.0.0.1/cb", "127.0.0.1"),
    ("http://localhost:3/cb", "localhost"),
    ("http://LOCALHOST./cb", "localhost"),
    ("http://[::1]:4/cb", "::1"),
    ("http://[0:0:0:0:0:0:0:1]/cb", "::1"),
    ("http://127.0.0.2/cb", "127.0.0.2"),
    ("https://App.Example.com/cb", "app.example.com"),
    ("com.example.app:/cb", None),
    ("not a url", None),
])
def test_cookie_host_is_the_browsers_host(url: str, host: str | None) -> None:
    assert cookie_host(url) == host


@pytest.mark.parametrize(("public_url", "refused", "accepted"), [
    ("http://127.0.0.1:8000", "http://127.0.0.1:3000/cb", "http://localhost:3000/cb"),
    ("http://127.0.0.1:8000", "http://127.1:3000/cb", "http://[::1]:3000/cb"),
    ("http://localhost:8000", "http://localhost:3000/cb", "http://127.0.0.1:3000/cb"),
    ("http://[::1]:8000", "http://[::1]:3000/cb", "http://127.0.0.1:3000/cb"),
    ("https://deputy.example.com", "https://deputy.example.com/cb", "https://app.example.com/cb"),
])
def test_a_redirect_uri_may_not_share_deputys_host(public_url: str, refused: str, accepted: str) -> None:
    problem = redirect_shares_cookies(refused, public_url)
    assert problem is not None and "cookies" in problem
    assert redirect_shares_cookies(accepted, public_url) is None
    assert redirect_shares_cookies("com.example.app:/cb", public_url) is None


def test_configured_client_on_deputys_host_stops_start_up(tmp_path: Path) -> None:
    path = tmp_path / "deputy.toml"
    path.write_text(SERVER + '[[clients]]\nclient_id = "ok"\nredirect_uris = ["http://[::1]:3/cb"]\n'
                    '[[clients]]\nclient_id = "c"\nredirect_uris = ["http://[::1]:3/cb", "http://127.0.0.1:3/cb"]\n')
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})  # the default public_url, http://127.0.0.1:8000
    assert info.value.key == "clients[1].redirect_uris[1]"  # the second URI; the first is on another host
    assert "cookies" in info.value.problem and "localhost" in info.value.problem
    # The operator who wants IP-literal redirects (RFC 8252 §7.3) runs Deputy on localhost instead.
    settings = load_settings(path, environ={"DEPUTY_PUBLIC_URL": "http://localhost:8000"})
    assert settings.clients[1].redirect_uris == ("http://[::1]:3/cb", "http://127.0.0.1:3/cb")


def document(*redirect_uris: str) -> dict[str, object]:
    return {"client_id": "https://app.example.com/client.json", "client_name": "App",
            "redirect_uris": list(redirect_uris)}


def test_a_metadata_document_naming_deputys_host_is_refused() -> None:
    with pytest.raises(ClientDocumentRefused, match="cookies"):
        parse_document(document("http://localhost:5/cb", "http://127.0.0.1:5/cb"),
                       "https://app.example.com/client.json", "http://127.0.0.1:8000")
    accepted = parse_document(document("http://localhost:5/cb"), "https://app.example.com/client.json",
                              "http://127.0.0.1:8000")
    assert accepted.redirect_uris == ("http://localhost:5/cb",)


# -- CSRF tokens --------------------------------------------------------------------------------


def test_a_csrf_token_verifies_only_for_its_purpose_and_binding(tmp_path: Path) -> None:
    tokens = CsrfTokens.from_data_dir(tmp_path)
    token = tokens.token("consent", "session-a")
    assert tokens.verify("consent", "session-a", token)
    assert not tokens.verify("approval", "session-a", token), "another form"
    assert not tokens.verify("login", "session-a", token), "another form"
    assert not tokens.verify("consent", "session-b", token), "another session"
    assert not tokens.verify("consent", None, token) and not tokens.verify("consent", "session-a", "")
    assert not tokens.verify("consent", "x" * 43, "x" * 43), "an attacker-chosen cookie and form pair"
    assert not tokens.verify("consent", "session-a", token + "\u00e9")


def test_the_csrf_key_is_made_once_private_and_kept(tmp_path: Path) -> None:
    first = CsrfTokens.from_data_dir(tmp_path)
    assert (tmp_path / "csrf.key").stat().st_mode & 0o777 == 0o600
    again = CsrfTokens.from_data_dir(tmp_path)  # a restart, or another replica on the same directory
    assert again.token("login", "b") == first.token("login", "b")
    assert CsrfTokens.from_data_dir(tmp_path / "other").token("login", "b") != first.token("login", "b")


@pytest.mark.parametrize(("origin", "ok"), [
    (None, True),
    ("http://127.0.0.1:8000", True),
    ("HTTP://127.0.0.1:8000", True),
    ("http://127.0.0.1:8001", False),
    ("http://localhost:8000", False),
    ("https://127.0.0.1:8000", False),
    ("null", False),
    ("", False),
    ("https://attacker.example", False),
])
def test_only_deputys_own_origin_may_post(origin: str | None, ok: bool) -> None:
    assert same_origin(origin, "http://127.0.0.1:8000") is ok


def test_default_ports_are_the_same_origin() -> None:
    assert same_origin("https://deputy.example.com", "https://deputy.example.com:443")
