"""The ES256 key ring: creation, file modes, JWKS, rotation, and dropping keys whose tokens have all expired."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from deputy import clock, keys
from deputy.keys import ALGORITHM, KeyRing
from deputy.oauth.access_tokens import AccessTokenValidator, InvalidToken, mint_access_token

LIFETIME = 600
ISSUER = "https://deputy.example.com"
RESOURCE = "https://deputy.example.com/mcp/demo"


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def signing_kid(ring: KeyRing) -> str:
    kid = ring.signing_key.kid
    assert kid is not None  # KeyRing names every key it makes
    return kid


def kids(ring: KeyRing) -> list[str]:
    return [k["kid"] for k in ring.jwks()["keys"]]


def mint(ring: KeyRing) -> str:
    token, _ = mint_access_token(ring, issuer=ISSUER, subject="user-1", client_id="client-1", audience=RESOURCE,
                                 scope="demo:tools", ttl=300, grant_id="grant-1", auth_time=None)
    return token


def validator(ring: KeyRing) -> AccessTokenValidator:
    return AccessTokenValidator(ring, ISSUER, leeway=30, is_revoked=lambda _grant: False)


def retire_long_ago(directory: Path, kid: str) -> None:
    index = directory / "keys.json"
    entries = json.loads(index.read_text())
    for entry in entries:
        if entry["kid"] == kid:
            entry["retired_at"] = clock.now() - LIFETIME - 60
    index.write_text(json.dumps(entries))
    stamp = index.stat().st_mtime + 5
    os.utime(index, (stamp, stamp))


@pytest.fixture
def directory(tmp_path: Path) -> Path:
    return tmp_path / "keys"


def test_open_creates_one_key(directory: Path) -> None:
    ring = KeyRing.open(directory, LIFETIME)
    entries = ring.entries()
    assert len(entries) == 1
    assert entries[0].retired_at is None
    assert signing_kid(ring) == entries[0].kid
    assert sorted(p.name for p in directory.iterdir()) == sorted(["keys.json", f"{entries[0].kid}.pem"])


def test_files_are_private(directory: Path) -> None:
    old_umask = os.umask(0o022)
    try:
        ring = KeyRing.open(directory, LIFETIME)
        ring.rotate()
    finally:
        os.umask(old_umask)
    assert mode(directory) == 0o700
    assert mode(directory / "keys.json") == 0o600
    pems = sorted(directory.glob("*.pem"))
    assert len(pems) == 2
    for pem in pems:
        assert mode(pem) == 0o600


def test_open_twice_reuses_the_key(directory: Path) -> None:
    first = KeyRing.open(directory, LIFETIME)
    second = KeyRing.open(directory, LIFETIME)
    assert len(second.entries()) == 1
    assert signing_kid(second) == signing_kid(first)


def test_jwks_is_public_only(directory: Path) -> None:
    ring = KeyRing.open(directory, LIFETIME)
    (jwk,) = ring.jwks()["keys"]
    assert jwk["kid"] == signing_kid(ring)
    assert jwk["alg"] == ALGORITHM == "ES256"
    assert jwk["kty"] == "EC"
    assert jwk["crv"] == "P-256"
    assert jwk["use"] == "sig"
    assert "d" not in jwk
    assert {"x", "y"} <= set(jwk)


def test_rotate_keeps_old_public_key(directory: Path) -> None:
    ring = KeyRing.open(directory, LIFETIME)
    old = signing_kid(ring)
    new = ring.rotate()
    assert new != old
    assert signing_kid(ring) == new
    assert sorted(kids(ring)) == sorted([old, new])
    entries = {e.kid: e for e in ring.entries()}
    assert entries[old].retired_at is not None
    assert entries[new].retired_at is None
    assert all("d" not in k for k in ring.jwks()["keys"])


def test_token_minted_before_rotation_still_validates(directory: Path) -> None:
    ring = KeyRing.open(directory, LIFETIME)
    old = signing_kid(ring)
    token = mint(ring)
    ring.rotate()
    fresh = validator(ring)  # nothing cached
    claims = fresh.validate(token, RESOURCE)
    assert claims.subject == "user-1"
    new_token = mint(ring)
    assert new_token != token
    assert fresh.validate(new_token, RESOURCE).subject == "user-1"
    assert old in kids(ring)


def test_running_ring_notices_rotation_by_another_process(directory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keys, "_RELOAD_INTERVAL", 0.0)
    running = KeyRing.open(directory, LIFETIME)
    old = signing_kid(running)
    new = KeyRing.open(directory, LIFETIME).rotate()  # `deputy keys rotate`
    index = directory / "keys.json"
    stamp = index.stat().st_mtime + 5
    os.utime(index, (stamp, stamp))
    assert signing_kid(running) == new
    assert sorted(kids(running)) == sorted([old, new])


def test_expired_retired_key_leaves_jwks_after_reload(directory: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keys, "_RELOAD_INTERVAL", 0.0)
    ring = KeyRing.open(directory, LIFETIME)
    old = signing_kid(ring)
    token = mint(ring)
    new = ring.rotate()
    assert sorted(kids(ring)) == sorted([old, new])
    retire_long_ago(directory, old)
    assert kids(ring) == [new]
    assert signing_kid(ring) == new
    with pytest.raises(InvalidToken):
        validator(ring).validate(token, RESOURCE)


def test_expired_retired_key_absent_from_new_ring(directory: Path) -> None:
    ring = KeyRing.open(directory, LIFETIME)
    old = signing_kid(ring)
    new = ring.rotate()
    retire_long_ago(directory, old)
    reopened = KeyRing.open(directory, LIFETIME)
    assert kids(reopened) == [new]
    # The entry stays in the index; only the JWKS drops it.
    assert {e.kid for e in reopened.entries()} == {old, new}


def test_reload_waits_for_the_interval(directory: Path) -> None:
    with clock.frozen() as frozen:
        ring = KeyRing.open(directory, LIFETIME)
        old = signing_kid(ring)
        new = KeyRing.open(directory, LIFETIME).rotate()
        index = directory / "keys.json"
        stamp = index.stat().st_mtime + 5
        os.utime(index, (stamp, stamp))
        # Within the reload interval of open() the ring still signs with what it loaded.
        frozen.advance(keys._RELOAD_INTERVAL / 2)
        assert signing_kid(ring) == old
        frozen.advance(keys._RELOAD_INTERVAL / 2)
        assert signing_kid(ring) == new
