"""Issue 16: the token endpoint remembers a client's row, but a secret rotated or a client denied on another replica
is refused at once (client credentials and token exchange; RFC 6749 §2.3.1, §5.2; RFC 8693 §2.1).

The attack: replica A has just authenticated an agent (so it remembers the client's row and the verified secret);
the operator rotates the agent's secret, or denies it, through replica B — here, the test process writing the same
database. A must refuse the old secret and the denied client on the next request, and accept the new secret.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from deputy.storage.clients import ClientRepository, hash_client_secret
from deputy.storage.db import Database
from tests.support.delegation import AGENT_A, AGENT_B, SECRETS, agent_own_token, delegation_deputy, exchange_token
from tests.support.deputy_process import RunningDeputy
from tests.support.oauth_flow import post_token

OLD, NEW = "rotating-agent-old-s3cret-0123456789", "rotating-agent-new-s3cret-0123456789"


@pytest.fixture(scope="module")
def deputy(backend: str, upstream_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDeputy]:
    directory: Path = tmp_path_factory.mktemp(f"deputy-remembered-clients-{backend}")
    with delegation_deputy(backend, upstream_url, directory) as running:
        yield running


@pytest.fixture
async def replica_b(deputy: RunningDeputy) -> AsyncIterator[ClientRepository]:
    """Another replica's view of the clients: the same database, not the running Deputy's memory."""
    database = Database(deputy.database_url)
    yield ClientRepository(database.engine)
    await database.dispose()


async def client_credentials(deputy: RunningDeputy, client_id: str, secret: str) -> httpx.Response:
    data = [("grant_type", "client_credentials"), ("resource", deputy.resource("demo"))]
    return await post_token(deputy, data, basic=(client_id, secret))


async def test_a_secret_rotated_on_another_replica_is_refused_at_once(
        deputy: RunningDeputy, replica_b: ClientRepository) -> None:
    client_id = "rotating-agent"
    await replica_b.put(client_id=client_id, client_name=client_id, redirect_uris=[], source="cli",
                        token_endpoint_auth_method="client_secret_basic", client_secret=OLD,
                        grant_types=["client_credentials"])
    first = await client_credentials(deputy, client_id, OLD)
    assert first.status_code == 200, first.text  # now remembered: the row and the verified secret
    await replica_b.put(client_id=client_id, client_name=client_id, redirect_uris=[], source="cli",
                        token_endpoint_auth_method="client_secret_basic", client_secret=NEW,
                        grant_types=["client_credentials"])
    stale = await client_credentials(deputy, client_id, OLD)
    assert stale.status_code == 401 and stale.json()["error"] == "invalid_client", stale.text
    rotated = await client_credentials(deputy, client_id, NEW)
    assert rotated.status_code == 200, rotated.text
    await replica_b.set_status(client_id, "denied")
    denied = await client_credentials(deputy, client_id, NEW)
    assert denied.status_code == 401 and denied.json()["error"] == "invalid_client", denied.text


async def test_an_exchange_with_a_secret_rotated_on_another_replica_is_refused(
        deputy: RunningDeputy, replica_b: ClientRepository) -> None:
    subject = await agent_own_token(deputy, AGENT_A)
    actor = await agent_own_token(deputy, AGENT_B)
    before = await exchange_token(deputy, AGENT_B, subject, actor)
    assert before.status_code == 200, before.text  # agent B's row is remembered
    stored = await replica_b.get(AGENT_B)
    assert stored is not None
    await replica_b.replace(dataclasses.replace(stored, client_secret_hash=hash_client_secret(NEW)))
    try:
        stale = await exchange_token(deputy, AGENT_B, subject, actor)
        assert stale.status_code == 401 and stale.json()["error"] == "invalid_client", stale.text
        data = [("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"), ("subject_token", subject),
                ("subject_token_type", "urn:ietf:params:oauth:token-type:access_token"), ("actor_token", actor),
                ("actor_token_type", "urn:ietf:params:oauth:token-type:access_token")]
        rotated = await post_token(deputy, data, basic=(AGENT_B, NEW))
        assert rotated.status_code == 200, rotated.text
    finally:
        await replica_b.replace(stored)
    assert SECRETS[AGENT_B] != NEW
