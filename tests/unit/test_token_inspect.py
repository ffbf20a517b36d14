"""`deputy token inspect`: decoding, signature checks against the data dir's key ring, and exit codes."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey
from typer.testing import CliRunner, Result

from deputy.act_chain import Actor, act_claim, may_act_claim
from deputy.cli import app
from deputy.cli.common import console
from deputy.keys import KeyRing
from deputy.oauth.access_tokens import mint_access_token
from tests.support.config_files import offline_config

ISSUER = "https://deputy.example.com"
RESOURCE = f"{ISSUER}/mcp/demo"
AGENT_A = Actor("agent-a", "agent-a", ISSUER)
AGENT_B = Actor("agent-b", "agent-b", "https://other-hop.example.com")


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return offline_config(tmp_path, public_url=ISSUER, scopes=("demo:tools", "demo:admin"))


@pytest.fixture
def ring(tmp_path: Path) -> KeyRing:
    return KeyRing.open(tmp_path / "data" / "keys", 600)


def mint(ring: KeyRing, *, issuer: str = ISSUER, subject: str = "alice", client_id: str = "agent-b",
         chain: tuple[Actor, ...] = (AGENT_B, AGENT_A), expires_at: int | None = None,
         auth_time: int | None = 1_700_000_000) -> str:
    token, _ = mint_access_token(
        ring, issuer=issuer, subject=subject, client_id=client_id, audience=RESOURCE, scope="demo:tools",
        ttl=300, grant_id="grant-1", auth_time=auth_time, expires_at=expires_at, act=act_claim(chain),
        may_act=may_act_claim(["agent-c", "agent-d"]), txn="task-42")
    return token


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fixed width, so table cells do not wrap mid-message whatever terminal (or none) the suite runs under."""
    monkeypatch.setattr(console, "width", 200)


def inspect(*args: str, config: Path | None = None, stdin: str | None = None) -> Result:
    argv = ["token", "inspect", *args]
    if config is not None:
        argv += ["--config", str(config)]
    # A wide terminal, so rich does not wrap what the assertions look for; no DEPUTY_CONFIG from outside.
    return CliRunner().invoke(app, argv, input=stdin, env={"COLUMNS": "250", "DEPUTY_CONFIG": None})


def inspect_json(*args: str, config: Path | None = None, stdin: str | None = None) -> tuple[int, dict[str, Any]]:
    result = inspect(*args, "--json", config=config, stdin=stdin)
    data: dict[str, Any] = json.loads(result.stdout)
    return result.exit_code, data


def b64(value: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()


def with_payload(token: str, **changes: Any) -> str:
    """The same header and signature over an altered payload."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims.update(changes)
    return f"{header}.{b64(claims)}.{signature}"


def test_explains_a_delegated_token_in_words(config: Path, ring: KeyRing) -> None:
    token = mint(ring)
    result = inspect(token, config=config)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "agent-b acting via agent-a for user alice" in out
    assert "1. agent-b (current), iss https://other-hop.example.com" in out
    assert f"2. agent-a (first), iss {ISSUER}" in out
    assert f"verified with key {ring.signing_key.kid} (active)" in out
    assert f"{ISSUER} (this Deputy)" in out
    assert f"{RESOURCE} (server demo)" in out
    assert "clients agent-c, agent-d may act for its subject" in out
    assert "task-42" in out
    assert "grant-1" in out
    assert "2023-11-14 22:13:20 UTC" in out  # auth_time 1_700_000_000, absolute and in UTC
    assert "expires in " in out
    assert "valid: expires in" in out


def test_json_has_the_claims_and_a_verification(config: Path, ring: KeyRing) -> None:
    code, data = inspect_json(mint(ring), config=config)
    assert code == 0
    assert data["header"] == {"alg": "ES256", "typ": "at+jwt", "kid": ring.signing_key.kid}
    assert data["claims"]["sub"] == "alice"
    assert data["claims"]["act"] == {"sub": "agent-b", "client_id": "agent-b", "iss": "https://other-hop.example.com",
                                     "act": {"sub": "agent-a", "client_id": "agent-a", "iss": ISSUER}}
    assert data["claims"]["may_act"] == {"client_id": ["agent-c", "agent-d"]}
    assert data["delegation"] == "agent-b acting via agent-a for user alice"
    verification = data["verification"]
    assert verification["signature"] == "valid"
    assert verification["key_status"] == "active"
    assert verification["issuer_ok"] is True
    assert verification["expired"] is False
    assert verification["expires_in"] > 0
    assert verification["problems"] == []
    assert verification["valid"] is True


def test_reads_the_token_from_stdin(config: Path, ring: KeyRing) -> None:
    token = mint(ring)
    code, from_stdin = inspect_json("-", config=config, stdin=f"Bearer {token}\n")
    assert code == 0
    assert from_stdin["claims"]["jti"] == inspect_json(token, config=config)[1]["claims"]["jti"]
    assert from_stdin["verification"]["signature"] == "valid"


def test_a_tampered_token_fails_with_exit_2(config: Path, ring: KeyRing) -> None:
    tampered = with_payload(mint(ring), sub="mallory")
    result = inspect(tampered, config=config)
    assert result.exit_code == 2
    assert "mallory" in result.stdout  # still decoded and shown
    assert f"does not verify with key {ring.signing_key.kid}" in result.stdout
    assert "not valid" in result.stdout
    code, data = inspect_json(tampered, config=config)
    assert code == 2
    assert data["verification"]["signature"] == "invalid"
    assert data["verification"]["valid"] is False


def test_a_token_from_another_key_ring_fails_with_exit_2(config: Path, ring: KeyRing, tmp_path: Path) -> None:
    elsewhere = KeyRing.open(tmp_path / "elsewhere", 600)
    result = inspect(mint(elsewhere), config=config)
    assert result.exit_code == 2
    assert f"kid {elsewhere.signing_key.kid} is not one of this Deputy's keys" in result.stdout
    code, data = inspect_json(mint(elsewhere), config=config)
    assert code == 2
    assert data["verification"]["signature"] == "unknown_key"


def test_a_forgery_under_deputys_kid_fails(config: Path, ring: KeyRing) -> None:
    kid = ring.signing_key.kid
    assert kid is not None
    impostor = ECKey.generate_key("P-256", parameters={"kid": kid}, private=True)
    claims = {"iss": ISSUER, "sub": "alice", "aud": RESOURCE, "client_id": "agent-b", "scope": "demo:tools",
              "jti": "j", "iat": int(time.time()), "exp": int(time.time()) + 300}
    forged = jwt.encode({"alg": "ES256", "typ": "at+jwt", "kid": impostor.kid}, claims, impostor, algorithms=["ES256"])
    code, data = inspect_json(forged, config=config)
    assert code == 2
    assert data["verification"]["signature"] == "invalid"


@pytest.mark.parametrize("alg", ["none", "HS256"])
def test_other_algorithms_are_refused(config: Path, ring: KeyRing, alg: str) -> None:
    _, payload, _ = mint(ring).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    if alg == "none":
        token = f"{b64({'alg': 'none', 'typ': 'at+jwt'})}.{payload}."
    else:
        secret = OctKey.import_key(json.dumps(ring.jwks()["keys"][0]).encode())
        token = jwt.encode({"alg": "HS256", "typ": "at+jwt", "kid": ring.signing_key.kid}, claims, secret,
                           algorithms=["HS256"])
    code, data = inspect_json(token, config=config)
    assert code == 2
    assert data["verification"]["signature"] == "invalid"
    assert "Deputy signs and accepts only ES256" in data["verification"]["detail"]


def test_an_expired_token_says_when_and_exits_2(config: Path, ring: KeyRing) -> None:
    token = mint(ring, expires_at=int(time.time()) - 200)
    result = inspect(token, config=config)
    assert result.exit_code == 2
    assert "expired 3 min ago" in result.stdout
    code, data = inspect_json(token, config=config)
    assert code == 2
    assert data["verification"]["signature"] == "valid"
    assert data["verification"]["expired"] is True
    assert data["verification"]["expires_in"] < 0


def test_another_issuer_is_refused(config: Path, ring: KeyRing) -> None:
    code, data = inspect_json(mint(ring, issuer="https://evil.example.com"), config=config)
    assert code == 2
    assert data["verification"]["signature"] == "valid"
    assert data["verification"]["issuer_ok"] is False
    assert any("not this Deputy" in p for p in data["verification"]["problems"])


def test_a_retired_key_still_verifies_while_published(config: Path, ring: KeyRing) -> None:
    old_kid = ring.signing_key.kid
    token = mint(ring)
    ring.rotate()
    code, data = inspect_json(token, config=config)
    assert code == 0
    assert data["verification"]["key_status"] == "retired"
    assert old_kid in data["verification"]["detail"]


def test_without_configuration_it_only_decodes(ring: KeyRing) -> None:
    token = with_payload(mint(ring), sub="mallory")  # tampered: without keys nobody can tell
    result = inspect(token)
    assert result.exit_code == 0
    assert "signature not checked" in result.stdout
    assert "agent-b acting via agent-a for user mallory" in result.stdout
    code, data = inspect_json(token)
    assert code == 0
    assert data["verification"]["signature"] == "not_checked"
    assert data["verification"]["issuer_ok"] is None


def test_a_data_dir_without_keys_is_left_untouched(config: Path, tmp_path: Path) -> None:
    elsewhere = KeyRing.open(tmp_path / "elsewhere", 600)
    code, data = inspect_json(mint(elsewhere), config=config)
    assert code == 0
    assert data["verification"]["signature"] == "not_checked"
    assert "no key ring" in data["verification"]["detail"]
    assert not (tmp_path / "data" / "keys").exists(), "inspecting must not create a signing key"


def test_a_token_that_is_not_delegated(config: Path, ring: KeyRing) -> None:
    token, _ = mint_access_token(ring, issuer=ISSUER, subject="agent-a", client_id="agent-a", audience=RESOURCE,
                                 scope="demo:tools", ttl=300, grant_id="g", auth_time=None)
    result = inspect(token, config=config)
    assert result.exit_code == 0
    assert "none: the client acts for the subject directly" in result.stdout
    assert "nobody (no may_act" in result.stdout
    assert inspect_json(token, config=config)[1]["delegation"] is None


def test_a_subject_without_sign_in_is_not_called_a_user(config: Path, ring: KeyRing) -> None:
    token = mint(ring, subject="agent-x", chain=(AGENT_A,), auth_time=None)
    assert inspect_json(token, config=config)[1]["delegation"] == "agent-a acting for subject agent-x"


def test_claims_cannot_write_to_the_terminal(config: Path, ring: KeyRing) -> None:
    token = mint(ring, subject="\x1b[2J[bold red]evil[/]")
    result = inspect(token, config=config)
    assert result.exit_code == 0
    assert "\x1b[2J" not in result.stdout
    assert "\\x1b[2J[bold red]evil[/]" in result.stdout


def test_a_malformed_act_chain_is_refused(config: Path, ring: KeyRing) -> None:
    token, _ = mint_access_token(ring, issuer=ISSUER, subject="alice", client_id="agent-a", audience=RESOURCE,
                                 scope="demo:tools", ttl=300, grant_id="g", auth_time=None,
                                 act={"sub": "agent-a", "exp": 1})
    code, data = inspect_json(token, config=config)
    assert code == 2
    assert data["verification"]["signature"] == "valid"
    assert any(p.startswith("act:") for p in data["verification"]["problems"])


def test_absurd_times_are_reported_not_fatal(config: Path, ring: KeyRing) -> None:
    token = with_payload(mint(ring), exp=1e300, iat="yesterday")
    result = inspect(token, config=config)
    assert result.exit_code == 2
    assert "1e+300 (not a time)" in result.stdout  # beyond year 9999: not a NumericDate Deputy accepts
    assert "exp is missing or not a number" in result.stdout
    assert "yesterday (not a time)" in result.stdout
    assert "iat is missing or not a number" in result.stdout


@pytest.mark.parametrize("token", [
    "not-a-token",
    "abc.def",
    "a.b.c",
    f"{b64({'alg': 'ES256'})}.{base64.urlsafe_b64encode(b'[1, 2]').decode()}.sig",
    "",
])
def test_malformed_tokens_exit_1(config: Path, ring: KeyRing, token: str) -> None:
    result = inspect("-", config=config, stdin=token)
    assert result.exit_code == 1
    assert "not a JWT" in result.stderr
    assert result.stdout == ""


def test_a_broken_configuration_exits_1(tmp_path: Path, ring: KeyRing) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text('public_url = "ftp://nope"\n')
    result = inspect(mint(ring), config=broken)
    assert result.exit_code == 1
    assert "public_url" in result.stderr
