"""Session ids bound to their principal, and the Host/Origin check against DNS rebinding."""

from __future__ import annotations

import dataclasses
import stat
from pathlib import Path

import pytest

from deputy.gateway.origin_check import OriginCheck
from deputy.gateway.principal import Principal
from deputy.gateway.sessions import SessionBinder

ALICE = Principal(user="alice", agent="client-1", scopes=frozenset({"demo:tools"}), token_id="t1", server="demo")


@pytest.fixture
def binder() -> SessionBinder:
    return SessionBinder(b"k" * 32)


# --- SessionBinder ----------------------------------------------------------------------------------


@pytest.mark.parametrize("upstream_id", ["abc123", "a.b.c", "9f8e-7d6c", "x"])
def test_roundtrip(binder: SessionBinder, upstream_id: str) -> None:
    outward = binder.outward(ALICE, upstream_id)
    assert outward.startswith(upstream_id + ".")
    assert outward != upstream_id
    assert binder.inward(ALICE, outward) == upstream_id


def test_outward_is_deterministic(binder: SessionBinder) -> None:
    assert binder.outward(ALICE, "s1") == binder.outward(ALICE, "s1")
    assert binder.outward(ALICE, "s1") != binder.outward(ALICE, "s2")


def test_same_principal_with_another_token_keeps_the_session(binder: SessionBinder) -> None:
    refreshed = dataclasses.replace(ALICE, token_id="t2", scopes=frozenset({"demo:tools", "demo:admin"}))
    assert binder.inward(refreshed, binder.outward(ALICE, "s1")) == "s1"


@pytest.mark.parametrize("other", [
    dataclasses.replace(ALICE, user="mallory"),
    dataclasses.replace(ALICE, agent="client-2"),
    dataclasses.replace(ALICE, server="other"),
])
def test_another_principal(binder: SessionBinder, other: Principal) -> None:
    assert binder.inward(other, binder.outward(ALICE, "s1")) is None


def test_field_boundaries_are_unambiguous(binder: SessionBinder) -> None:
    a = dataclasses.replace(ALICE, user="ab", agent="c")
    b = dataclasses.replace(ALICE, user="a", agent="bc")
    assert binder.inward(b, binder.outward(a, "s1")) is None


def test_another_key(binder: SessionBinder) -> None:
    assert SessionBinder(b"j" * 32).inward(ALICE, binder.outward(ALICE, "s1")) is None


def test_tampered_tag(binder: SessionBinder) -> None:
    outward = binder.outward(ALICE, "s1")
    last = outward[-1]
    tampered = outward[:-1] + ("A" if last != "A" else "B")
    assert binder.inward(ALICE, tampered) is None
    assert binder.inward(ALICE, outward[:-1]) is None
    assert binder.inward(ALICE, outward + "A") is None


def test_tampered_upstream_id(binder: SessionBinder) -> None:
    tag = binder.outward(ALICE, "s1").rsplit(".", 1)[1]
    assert binder.inward(ALICE, f"s2.{tag}") is None


@pytest.mark.parametrize("presented", ["s1", "", ".", "s1.", ".tag"])
def test_malformed_ids(binder: SessionBinder, presented: str) -> None:
    assert binder.inward(ALICE, presented) is None


def test_bare_upstream_id_from_upstream(binder: SessionBinder) -> None:
    """An id without a dot — the upstream's own id, guessed or leaked — is refused."""
    assert binder.inward(ALICE, binder.outward(ALICE, "s1").split(".")[0]) is None


@pytest.mark.parametrize("presented", ["s1.\u00e9", "s1.\u00ff\u00fe", "\u00e9.tag"])
def test_non_ascii_session_id(binder: SessionBinder, presented: str) -> None:
    """The proxy decodes the Mcp-Session-Id header as latin-1, so any byte can arrive; refuse it, do not crash."""
    assert binder.inward(ALICE, presented) is None


def test_from_data_dir_creates_and_reuses_a_private_key(tmp_path: Path) -> None:
    directory = tmp_path / "data"
    first = SessionBinder.from_data_dir(directory)
    key_file = directory / "session.key"
    assert len(key_file.read_bytes()) == 32
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    second = SessionBinder.from_data_dir(directory)
    assert second.key == first.key
    assert second.inward(ALICE, first.outward(ALICE, "s1")) == "s1"


# --- OriginCheck ------------------------------------------------------------------------------------


@pytest.fixture
def check() -> OriginCheck:
    return OriginCheck("https://deputy.example.com", ["https://app.example.com", "http://localhost:5173/"])


def test_matching_host_without_origin(check: OriginCheck) -> None:
    assert check.allows(b"deputy.example.com", None) is True


def test_matching_host_and_own_origin(check: OriginCheck) -> None:
    assert check.allows(b"deputy.example.com", b"https://deputy.example.com") is True


@pytest.mark.parametrize("host", [
    b"evil.example.com", b"deputy.example.com.evil.com", b"deputy.example.com:8443", b"", b"127.0.0.1",
])
def test_wrong_host(check: OriginCheck, host: bytes) -> None:
    assert check.allows(host, None) is False
    assert check.allows(host, b"https://deputy.example.com") is False


def test_missing_host(check: OriginCheck) -> None:
    assert check.allows(None, None) is False
    assert check.allows(None, b"https://deputy.example.com") is False


@pytest.mark.parametrize("origin", [b"https://app.example.com", b"http://localhost:5173"])
def test_allowed_extra_origin(check: OriginCheck, origin: bytes) -> None:
    assert check.allows(b"deputy.example.com", origin) is True


@pytest.mark.parametrize("origin", [
    b"https://evil.example.com", b"http://deputy.example.com", b"https://deputy.example.com:8443",
    b"https://app.example.com.evil.com", b"null", b"",
])
def test_foreign_origin(check: OriginCheck, origin: bytes) -> None:
    assert check.allows(b"deputy.example.com", origin) is False


def test_case_insensitive(check: OriginCheck) -> None:
    assert check.allows(b"DEPUTY.Example.COM", b"HTTPS://Deputy.Example.Com") is True
    assert check.allows(b"deputy.example.com", b"HTTPS://APP.EXAMPLE.COM") is True
    upper = OriginCheck("https://Deputy.Example.com", ["HTTPS://App.Example.com"])
    assert upper.allows(b"deputy.example.com", b"https://app.example.com") is True


def test_surrounding_whitespace_ignored(check: OriginCheck) -> None:
    assert check.allows(b" deputy.example.com ", b" https://app.example.com") is True


def test_loopback_public_url_with_port() -> None:
    check = OriginCheck("http://127.0.0.1:8000")
    assert check.allows(b"127.0.0.1:8000", b"http://127.0.0.1:8000") is True
    assert check.allows(b"localhost:8000", None) is False
    assert check.allows(b"127.0.0.1:8001", None) is False
    assert check.allows(b"127.0.0.1:8000", b"http://attacker.example:8000") is False
