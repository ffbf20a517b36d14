"""Policies on a ``credentials = "oauth"`` server (issue 15): its tools are read with the caller's own connection.

Deputy has no credential of its own at such an upstream, so the engine is built at the first call, with the headers
of the user making it; before that nothing is decided and she is told to connect. The tool list is fetched by a
stand-in here (what is asked for, and with which headers, is what these tests check); the whole path against a real
authorization server and MCP server is tests/e2e/test_upstream_oauth_policy.py.

Abuse first: nothing is read at start, nor with another user's or Deputy's own (empty) credential; a user without a
connection neither gets nor poisons a decision for others; an error that is not a connection's is not taken for one;
no header or token is kept. Then: built once with hers, re-read with the last reader's.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from deputy.config import UpstreamServer
from deputy.connections.errors import ConnectionFailed
from deputy.connections.model import ConnectionNeeded
from deputy.gateway import policy_lifecycle
from deputy.gateway.policy_lifecycle import PolicyLifecycle, Unavailable
from deputy.gateway.principal import Principal
from deputy.gateway.tool_catalog import CatalogUnavailable, fetch_tools
from deputy.gateway.upstream_credentials import OAuthCredentials
from deputy.policy import PolicyEngine, PolicyLoadError

PUBLIC = "https://deputy.example"
CONNECT_URL = f"{PUBLIC}/connect/ext"
TOOLS = [{"name": name, "inputSchema": {"type": "object", "properties": {}}} for name in ("whoami", "secret")]
MORE_TOOLS: list[dict[str, Any]] = [*TOOLS, {"name": "extra", "inputSchema": {"type": "object", "properties": {}}}]
POLICY = '''
@id("all")
permit (principal, action, resource);

@id("no-secret")
forbid (principal, action == Deputy::Action::"secret", resource);
'''


def principal(user: str) -> Principal:
    return Principal(user=user, agent="client-1", scopes=frozenset({"t"}), token_id=f"jti-{user}", server="ext",
                     expires_at=2**40)


@dataclass
class FakeConnections:
    tokens: dict[str, str] = field(default_factory=dict)
    failure: Exception | None = None
    asked: list[str] = field(default_factory=list)

    async def headers_for(self, server: UpstreamServer,
                          principal: Principal) -> Sequence[tuple[str, str]] | ConnectionNeeded:
        self.asked.append(principal.user)
        if self.failure is not None:
            raise self.failure
        token = self.tokens.get(principal.user)
        if token is None:
            return ConnectionNeeded("ext", CONNECT_URL, "not_connected", f"Connect: {CONNECT_URL}")
        return (("Authorization", f"Bearer {token}"),)


@dataclass
class FakeCatalog:
    """Stands in for :func:`fetch_tools`: records the headers each read was made with."""

    tools: list[dict[str, Any]] = field(default_factory=lambda: list(TOOLS))
    reads: list[Sequence[tuple[str, str]] | None] = field(default_factory=list)

    async def __call__(self, server: UpstreamServer, credentials: object, issuer: str,
                       headers: Sequence[tuple[str, str]] | None = None) -> list[dict[str, Any]]:
        self.reads.append(headers)
        if headers is None:
            raise CatalogUnavailable("read without a user's connection")
        return self.tools


@dataclass
class Setup:
    lifecycle: PolicyLifecycle
    connections: FakeConnections
    catalog: FakeCatalog


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Setup:
    (tmp_path / "ext.cedar").write_text(POLICY)
    server = UpstreamServer(name="ext", resource=f"{PUBLIC}/mcp/ext", title="Ext", scopes=("t",), required_scopes=(),
                            url="https://upstream.example/mcp", credentials="oauth", policies=tmp_path)
    catalog = FakeCatalog()
    monkeypatch.setattr(policy_lifecycle, "fetch_tools", catalog)
    connections = FakeConnections()
    return Setup(PolicyLifecycle(server, OAuthCredentials(), PUBLIC, connections=connections), connections, catalog)


# -- abuse -----------------------------------------------------------------------------------------------------


async def test_start_up_reads_no_tools_and_says_when_they_are_read(setup: Setup,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger=policy_lifecycle.__name__):
        await setup.lifecycle.check_at_start()
    assert setup.catalog.reads == [] and setup.connections.asked == []
    assert setup.lifecycle.engine is None
    assert "read at first use" in caplog.text


async def test_start_up_still_refuses_a_policy_file_that_does_not_parse(setup: Setup) -> None:
    (setup.lifecycle.directory / "ext.cedar").write_text("permit (principal, action resource);")
    with pytest.raises(PolicyLoadError, match=r"ext\.cedar"):
        await setup.lifecycle.check_at_start()


async def test_without_her_connection_nothing_is_read_and_she_is_told_to_connect(setup: Setup) -> None:
    answer = await setup.lifecycle.ready_engine(principal("alice"))
    assert isinstance(answer, Unavailable) and isinstance(answer.connection, ConnectionNeeded), answer
    assert answer.connection.connect_url == CONNECT_URL and answer.connection.reason == "not_connected"
    assert setup.catalog.reads == [] and setup.connections.asked == ["alice"]


async def test_no_principal_reads_nothing(setup: Setup) -> None:
    answer = await setup.lifecycle.ready_engine()
    assert isinstance(answer, Unavailable) and answer.connection is None
    assert setup.catalog.reads == [] and setup.connections.asked == []


async def test_the_catalog_refuses_to_read_an_oauth_server_without_a_users_headers(setup: Setup) -> None:
    """Deputy's own credential there is none: the real fetch_tools asks for nothing rather than send no token."""
    with pytest.raises(CatalogUnavailable, match="user's connection"):
        await fetch_tools(setup.lifecycle.server, OAuthCredentials(), PUBLIC)


async def test_one_user_without_a_connection_does_not_hold_up_the_next(setup: Setup) -> None:
    """Her missing connection is hers: not remembered as the server's failure (no RETRY_SECONDS wait for Bob)."""
    assert isinstance(await setup.lifecycle.ready_engine(principal("alice")), Unavailable)
    setup.connections.tokens["bob"] = "up-bob"
    assert isinstance(await setup.lifecycle.ready_engine(principal("bob")), PolicyEngine)
    assert setup.catalog.reads == [(("Authorization", "Bearer up-bob"),)]


async def test_an_unusable_connection_is_answered_as_such(setup: Setup) -> None:
    failure = ConnectionFailed("ext", "upstream_unavailable", "connect timeout")
    setup.connections.failure = failure
    answer = await setup.lifecycle.ready_engine(principal("alice"))
    assert isinstance(answer, Unavailable) and answer.connection is failure
    assert setup.catalog.reads == []


async def test_an_error_that_is_not_a_connections_is_not_taken_for_one(setup: Setup) -> None:
    setup.connections.failure = RuntimeError("a bug")
    with pytest.raises(RuntimeError, match="a bug"):
        await setup.lifecycle.ready_engine(principal("alice"))


async def test_no_header_or_token_is_kept(setup: Setup) -> None:
    setup.connections.tokens["alice"] = "up-alice-secret"
    assert isinstance(await setup.lifecycle.ready_engine(principal("alice")), PolicyEngine)
    kept = repr({name: value for name, value in vars(setup.lifecycle).items()
                 if value is not setup.connections})  # the vault's side (here a stand-in) may hold it
    assert "up-alice-secret" not in kept


# -- the happy path --------------------------------------------------------------------------------------------


async def test_built_once_with_hers_then_decided_for_anyone_without_a_connection(setup: Setup) -> None:
    setup.connections.tokens["alice"] = "up-alice"
    engine = await setup.lifecycle.ready_engine(principal("alice"))
    assert isinstance(engine, PolicyEngine)
    assert await setup.lifecycle.ready_engine(principal("carol")) is engine  # Carol has none: not asked
    assert setup.connections.asked == ["alice"] and len(setup.catalog.reads) == 1
    denied = engine.decide(principal("carol"), "tools/call", "secret", {})
    assert not denied.allowed and denied.determining == ("no-secret",)


async def test_changed_tools_are_read_with_the_last_readers_connection(setup: Setup) -> None:
    setup.connections.tokens.update({"alice": "up-alice", "bob": "up-bob"})
    engine = await setup.lifecycle.ready_engine(principal("alice"))
    assert isinstance(engine, PolicyEngine)
    setup.catalog.tools = MORE_TOOLS
    await setup.lifecycle._refresh_once()  # SIGHUP or a reload: no call names a user, Alice's connection is asked
    assert setup.catalog.reads[-1] == (("Authorization", "Bearer up-alice"),)
    assert "extra" in engine.loaded.schema.tools
    setup.lifecycle.tools_changed(principal("bob"))  # announced in an answer to Bob: his connection reads it
    await setup.lifecycle._refresh  # type: ignore[misc]
    assert setup.catalog.reads[-1] == (("Authorization", "Bearer up-bob"),)


async def test_a_change_the_reader_can_no_longer_read_keeps_the_previous_schema(setup: Setup) -> None:
    setup.connections.tokens["alice"] = "up-alice"
    engine = await setup.lifecycle.ready_engine(principal("alice"))
    assert isinstance(engine, PolicyEngine)
    version = engine.loaded.schema.version
    del setup.connections.tokens["alice"]  # she disconnected
    setup.catalog.tools = MORE_TOOLS
    await setup.lifecycle._refresh_once()
    assert len(setup.catalog.reads) == 1 and engine.loaded.schema.version == version
