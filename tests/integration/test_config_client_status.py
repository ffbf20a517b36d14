"""Issue 12, "Config clients come back": the configuration file owns a config client's metadata, the operator
its status (deputy.storage.clients). Re-declaring a client never re-activates a denied one nor recreates a
removed one, and a stale write of a client's metadata never lifts a withdrawal.
"""

from __future__ import annotations

import dataclasses

import pytest

from deputy.storage.clients import Client, ClientRepository, new_client
from deputy.storage.db import Database
from deputy.storage.grants import GrantRepository
from tests.integration.conftest import unique

REDIRECT = "http://127.0.0.1:1/cb"


@pytest.fixture
def clients(db: Database) -> ClientRepository:
    return ClientRepository(db.engine)


def declared(client_id: str, name: str = "From the file", source: str = "config") -> Client:
    return new_client(client_id=client_id, client_name=name, redirect_uris=[REDIRECT],
                      token_endpoint_auth_method="client_secret_basic", client_secret="from-the-file", source=source)


@pytest.mark.parametrize("status", ["denied", "removed"])
async def test_redeclaring_keeps_an_operators_withdrawal(db: Database, clients: ClientRepository,
                                                         status: str) -> None:
    """Issue 12: deny/remove a config client, re-run the start's sync: still withdrawn, metadata updated."""
    client_id = unique("config")
    first = await clients.declare(declared(client_id))
    assert first.status == "active"
    assert await GrantRepository(db.engine, 600).withdraw_client(client_id, status, "test") == 0
    again = await clients.declare(declared(client_id, name="Renamed in the file"))
    assert (again.status, again.client_name, again.created_at) == (status, "Renamed in the file", first.created_at)
    stored = await clients.get(client_id)
    assert stored is not None and stored.status == status and not stored.is_active
    assert await clients.set_status(client_id, "active")  # `deputy clients approve`: the operator's word
    assert (await clients.declare(declared(client_id))).status == "active"


async def test_a_removed_client_that_no_file_declares_is_deleted(db: Database, clients: ClientRepository) -> None:
    client_id = unique("cli")
    await clients.insert(declared(client_id, source="cli"))
    assert await GrantRepository(db.engine, 600).withdraw_client(client_id, "removed", "test") == 0
    assert await clients.get(client_id) is None


async def test_a_stale_metadata_write_does_not_lift_a_denial(db: Database, clients: ClientRepository) -> None:
    """Issue 12: a client read as active before a denial (a document refresh, an RFC 7592 update) and written
    back after it stays denied."""
    client_id = unique("registered")
    stale = await clients.insert(declared(client_id, source="registration"))
    assert await GrantRepository(db.engine, 600).withdraw_client(client_id, "denied", "test") == 0
    assert await clients.replace(dataclasses.replace(stale, client_name="Updated"))
    stored = await clients.get(client_id)
    assert stored is not None and (stored.status, stored.client_name) == ("denied", "Updated")
