"""Issue 15: disconnecting a user's connection to an upstream with its own authorization server, through
:class:`deputy.connections.service.Connections` and the CLI, against a real one (oidc-provider,
tests/support/upstream_oauth.py) and on both backends.

Abuse first: a disconnect on another replica is seen within the revocation staleness. Then: disconnecting (RFC 7009
at the authorization server, refresh and access token, and still disconnected when it cannot take the revocation),
and disabling her or revoking her consent through the CLI.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from deputy import clock
from deputy.cli import app
from deputy.config import Settings
from deputy.connections.errors import ConnectionFailed
from deputy.connections.model import ConnectionNeeded
from deputy.connections.refresh import token_digest
from deputy.services import Services
from tests.integration.conftest import unique
from tests.support.connections_service import (
    Upstream,
    connected,
    data,
    ext,
    new_user,
    principal,
    records,
    services,
    settings_for,
    vault_key,
)
from tests.support.upstream_oauth import oauth_upstream

__all__ = ["data", "oauth_upstream", "services", "vault_key"]  # the fixtures, used by name below


# --- abuse --------------------------------------------------------------------------------------------------------

async def test_a_disconnect_on_another_replica_is_seen_within_the_revocation_staleness(
        oauth_upstream: Upstream, services: Services, url: str, data: Path, tmp_path: Path, vault_key: str) -> None:
    other = Services.open(settings_for(tmp_path / "other", data, url, oauth_upstream[1], vault_key))
    await other.start()
    try:
        with clock.frozen() as frozen:
            alice = await new_user(services)
            await connected(oauth_upstream, services, alice)
            assert not isinstance(await services.connections.headers_for(ext(services), principal(alice)),
                                  ConnectionNeeded)
            assert await other.connections.disconnect(alice, "ext", "user")
            frozen.advance(services.settings.revocation_max_staleness + 0.1)
            needed = await services.connections.headers_for(ext(services), principal(alice))
            assert isinstance(needed, ConnectionNeeded) and needed.reason == "not_connected"
    finally:
        await other.close()


# --- behaviour ------------------------------------------------------------------------------------------------------

async def test_disconnect_deletes_then_revokes_both_tokens_at_the_authorization_server(
        oauth_upstream: Upstream, services: Services) -> None:
    alice = await new_user(services)
    await connected(oauth_upstream, services, alice)
    row = await services.connections.parts.store.get(alice, "ext")
    assert row is not None
    refresh_digest = token_digest(services.connections.keeper.open(row, "refresh_token"))
    assert await services.connections.disconnect(alice, "ext", "user")
    # oidc-provider revokes the refresh token (and the grant with it); its JWT access tokens it cannot revoke
    # (unsupported_token_type), which Deputy asks anyway and logs.
    assert refresh_digest in oauth_upstream[0].revoked_tokens()
    needed = await services.connections.headers_for(ext(services), principal(alice))
    assert isinstance(needed, ConnectionNeeded) and needed.reason == "not_connected"
    assert not await services.connections.disconnect(alice, "ext", "user")
    [record] = [r for r in await records(services, "connection.revoked") if r["user"] == alice]
    assert (record["reason"], record["upstream_revoked"], record["token_sha256"]) == (
        "user", ["refresh_token"], row.token_digest)


async def test_a_revocation_the_upstream_cannot_take_still_disconnects(
        oauth_upstream: Upstream, services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
    alice = await new_user(services)
    await connected(oauth_upstream, services, alice)
    asked: list[str] = []

    async def away(_server: Any, _protection: Any, _client: Any, _token: str, hint: str) -> None:
        asked.append(hint)
        raise ConnectionFailed("ext", "upstream_unavailable", "connection refused")

    monkeypatch.setattr(services.connections.parts.authorization, "revoke", away)
    assert await services.connections.disconnect(alice, "ext", "user")
    assert asked == ["refresh_token", "access_token"]
    assert await services.connections.list(alice) == []
    [record] = [r for r in await records(services, "connection.revoked") if r["user"] == alice]
    assert record["upstream_revoked"] == []


# --- the CLI hooks ------------------------------------------------------------------------------------------------

def cli(config: Path, vault_key: str, *args: str) -> Any:
    return CliRunner().invoke(app, [*args, "--config", str(config)], env={"DEPUTY_VAULT_KEY": vault_key})


def connect_in_own_loop(upstream: Upstream, settings: Settings, name: str) -> tuple[str, str]:
    """A user ``name`` connected (in a loop of its own, as the CLI runs in one): her id and her refresh token's
    digest."""
    async def work() -> tuple[str, str]:
        services = Services.open(settings)
        await services.start()
        try:
            user_id = (await services.users.add(name, "a long passphrase")).user_id
            await services.consents.grant(user_id, "some-client", settings.resource_of("ext"), {"ext:tools"})
            await connected(upstream, services, user_id)
            row = await services.connections.parts.store.get(user_id, "ext")
            assert row is not None
            return user_id, token_digest(services.connections.keeper.open(row, "refresh_token"))
        finally:
            await services.close()
    return asyncio.run(work())


def connections_of(settings: Settings, user_id: str) -> list[Any]:
    async def work() -> list[Any]:
        services = Services.open(settings)
        try:
            return list(await services.connections.list(user_id))
        finally:
            await services.close()
    return asyncio.run(work())


@pytest.mark.parametrize("hook", ["users disable", "consents revoke", "consents revoke --server ext"])
def test_disabling_her_or_revoking_her_consent_revokes_her_connections(
        oauth_upstream: Upstream, url: str, data: Path, tmp_path: Path, vault_key: str, hook: str) -> None:
    settings = settings_for(tmp_path, data, url, oauth_upstream[1], vault_key)
    name = unique("carol")
    user_id, refresh_digest = connect_in_own_loop(oauth_upstream, settings, name)
    args = {"users disable": ["users", "disable", name],
            "consents revoke": ["consents", "revoke", "--user", name, "--client", "some-client"],
            "consents revoke --server ext": ["consents", "revoke", "--user", name, "--client", "some-client",
                                             "--server", "ext"]}[hook]
    result = cli(tmp_path / "deputy.toml", vault_key, *args)
    assert result.exit_code == 0, result.output
    assert "1 upstream connection(s)" in result.output
    assert connections_of(settings, user_id) == []
    assert refresh_digest in oauth_upstream[0].revoked_tokens()
