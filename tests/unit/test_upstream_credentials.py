"""Upstream credentials: what Deputy mints or sends for a principal, and the per-token cache.

The clock handed to `ExchangeCredentials` is a value the test sets, so "later" is a number
the test chooses, never a wait.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import pytest
from joserfc import jwt

from deputy.act_chain import Actor
from deputy.config import UpstreamServer
from deputy.gateway.principal import Principal
from deputy.gateway.upstream_credentials import (
    REFRESH_MARGIN,
    UPSTREAM_TOKEN_TTL,
    ExchangeCredentials,
    NoCredentials,
    StaticCredentials,
    upstream_credentials,
)
from deputy.keys import KeyRing

ISSUER = "https://deputy.example"
AUDIENCE = "https://upstream.example/mcp"


def _server(credentials: str = "exchange", **extra: object) -> UpstreamServer:
    return UpstreamServer(
        name="tools", resource=f"{ISSUER}/mcp/tools", title="Tools", scopes=("tools:read", "tools:write"),
        required_scopes=("tools:read",), url="http://127.0.0.1:9/mcp", credentials=credentials,
        upstream_audience=AUDIENCE if credentials == "exchange" else None, **extra)  # type: ignore[arg-type]


class Clock:
    def __init__(self) -> None:
        self.now = float(int(time.time()))

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def keyring(tmp_path: Path) -> KeyRing:
    return KeyRing.open(tmp_path / "keys", 3600)


def _principal(token_id: str = "jti-1", *, user: str = "alice", agent: str = "agent-b", expires_in: int = 600,
               actors: tuple[Actor, ...] = (), txn: str | None = "task-1", clock: Clock | None = None) -> Principal:
    now = clock.now if clock is not None else time.time()
    return Principal(user=user, agent=agent, scopes=frozenset({"tools:write", "tools:read"}), token_id=token_id,
                     server="tools", actors=actors, txn=txn, expires_at=int(now) + expires_in, grant_id="g-1",
                     auth_time=1_700_000_000)


def _token(headers: Sequence[tuple[str, str]]) -> str:
    ((name, value),) = headers
    assert name == "Authorization"
    scheme, _, token = value.partition(" ")
    assert scheme == "Bearer"
    return token


def test_the_minted_token_is_for_the_upstream_and_carries_the_chain_behind_the_gateway(keyring: KeyRing) -> None:
    credentials = ExchangeCredentials(_server(), keyring, ISSUER)
    chain = (Actor("agent-b", "agent-b", ISSUER), Actor("agent-a", "agent-a", ISSUER))
    principal = _principal(actors=chain)
    decoded = jwt.decode(_token(credentials.headers(principal)), keyring.public_keys, algorithms=["ES256"])
    assert decoded.header["typ"] == "at+jwt"
    assert decoded.header["kid"] == keyring.signing_key.kid
    claims = decoded.claims
    assert claims["iss"] == ISSUER
    assert claims["aud"] == AUDIENCE
    assert claims["sub"] == "alice"
    assert claims["client_id"] == "agent-b"
    assert claims["scope"] == "tools:read tools:write"
    assert claims["txn"] == "task-1"
    assert claims["auth_time"] == 1_700_000_000
    assert claims["act"] == {
        "sub": f"{ISSUER}/mcp/tools", "iss": ISSUER,
        "act": {"sub": "agent-b", "client_id": "agent-b", "iss": ISSUER,
                "act": {"sub": "agent-a", "client_id": "agent-a", "iss": ISSUER}}}
    assert "sid" not in claims and "may_act" not in claims
    assert claims["jti"] != principal.token_id


def test_lifetime_is_at_most_a_minute_and_never_past_the_clients_token(keyring: KeyRing) -> None:
    credentials = ExchangeCredentials(_server(), keyring, ISSUER)
    long_lived = jwt.decode(_token(credentials.headers(_principal("long", expires_in=3600))), keyring.public_keys)
    assert long_lived.claims["exp"] - long_lived.claims["iat"] <= UPSTREAM_TOKEN_TTL
    short = _principal("short", expires_in=20)
    capped = jwt.decode(_token(credentials.headers(short)), keyring.public_keys)
    assert capped.claims["exp"] == short.expires_at


def test_the_same_client_token_reuses_one_upstream_token(keyring: KeyRing) -> None:
    credentials = ExchangeCredentials(_server(), keyring, ISSUER)
    principal = _principal()
    first = _token(credentials.headers(principal))
    assert _token(credentials.headers(principal)) == first
    assert _token(credentials.headers(_principal())) == first, "keyed by the client token's jti"


def test_different_client_tokens_get_different_upstream_tokens(keyring: KeyRing) -> None:
    credentials = ExchangeCredentials(_server(), keyring, ISSUER)
    alice = _token(credentials.headers(_principal("jti-alice")))
    bob = _token(credentials.headers(_principal("jti-bob", user="bob", agent="agent-a")))
    assert alice != bob
    assert jwt.decode(bob, keyring.public_keys).claims["sub"] == "bob"
    assert jwt.decode(bob, keyring.public_keys).claims["client_id"] == "agent-a"
    assert jwt.decode(alice, keyring.public_keys).claims["sub"] == "alice"


def test_a_token_near_its_end_is_replaced(keyring: KeyRing) -> None:
    clock = Clock()
    credentials = ExchangeCredentials(_server(), keyring, ISSUER, clock=clock)
    principal = _principal(expires_in=3600, clock=clock)
    first = _token(credentials.headers(principal))
    clock.now += UPSTREAM_TOKEN_TTL - REFRESH_MARGIN - 5
    assert _token(credentials.headers(principal)) == first, "still well within its life"
    clock.now += 10
    assert _token(credentials.headers(principal)) != first, "within the refresh margin: minted again"


def test_a_token_capped_by_the_clients_is_used_to_its_end(keyring: KeyRing) -> None:
    """Minting again could not outlive the client's token, so there is nothing to gain by it."""
    clock = Clock()
    credentials = ExchangeCredentials(_server(), keyring, ISSUER, clock=clock)
    principal = _principal(expires_in=REFRESH_MARGIN - 5, clock=clock)
    first = _token(credentials.headers(principal))
    assert _token(credentials.headers(principal)) == first
    clock.now = principal.expires_at
    assert _token(credentials.headers(principal)) != first, "an ended token is never handed out"


def test_the_cache_is_bounded_and_drops_the_least_recently_used(keyring: KeyRing) -> None:
    credentials = ExchangeCredentials(_server(), keyring, ISSUER, cache_size=2)
    one, two = _principal("one"), _principal("two")
    first_one, first_two = _token(credentials.headers(one)), _token(credentials.headers(two))
    assert _token(credentials.headers(one)) == first_one  # "one" is now the most recently used
    credentials.headers(_principal("three"))  # pushes out "two"
    assert _token(credentials.headers(one)) == first_one
    assert _token(credentials.headers(two)) != first_two


def test_static_and_no_credentials(keyring: KeyRing) -> None:
    static = upstream_credentials(_server("static", headers={"X-Api-Key": "k-123"}), keyring, ISSUER)
    assert isinstance(static, StaticCredentials)
    assert list(static.headers(_principal())) == [("X-Api-Key", "k-123")]
    assert static.header_names == frozenset({"x-api-key"})
    none = upstream_credentials(_server("none"), keyring, ISSUER)
    assert isinstance(none, NoCredentials)
    assert list(none.headers(_principal())) == []
    exchange = upstream_credentials(_server(), keyring, ISSUER)
    assert isinstance(exchange, ExchangeCredentials)
    assert exchange.header_names == frozenset({"authorization"})
