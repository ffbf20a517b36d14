"""`context.agent.registration`: how the calling agent was registered, read from the client store (both backends)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import update
from sqlalchemy.exc import SQLAlchemyError

from deputy.gateway.policy_stage import RegistrationKinds
from deputy.storage.clients import ClientRepository
from deputy.storage.db import Database
from deputy.storage.tables import clients as clients_table
from tests.integration.conftest import unique


@pytest.mark.parametrize(("source", "kind"), [("config", "config"), ("cli", "cli"), ("document", "document"),
                                              ("registration", "dynamic")])
async def test_each_registration_source_has_its_name(db: Database, source: str, kind: str) -> None:
    repository = ClientRepository(db.engine)
    client_id = unique("agent")
    await repository.put(client_id=client_id, client_name="agent", redirect_uris=["http://127.0.0.1/cb"],
                         token_endpoint_auth_method="none", source=source)
    assert await RegistrationKinds(repository.get).of(client_id) == kind


async def test_an_unregistered_identity_is_none_and_answers_are_remembered(db: Database) -> None:
    repository = ClientRepository(db.engine)
    kinds = RegistrationKinds(repository.get)
    assert await kinds.of(unique("workload")) == "none"
    client_id = unique("agent")
    await repository.put(client_id=client_id, client_name="agent", redirect_uris=["http://127.0.0.1/cb"],
                         token_endpoint_auth_method="none", source="cli")
    assert await kinds.of(client_id) == "cli"
    async with db.engine.begin() as conn:  # changed in the store: the remembered answer holds for a minute
        await conn.execute(update(clients_table).where(clients_table.c.client_id == client_id)
                           .values(source="registration"))
    assert await kinds.of(client_id) == "cli"
    assert await RegistrationKinds(repository.get).of(client_id) == "dynamic"


async def test_a_store_that_cannot_be_read_raises(tmp_path: Path) -> None:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'no.db'}")
    try:
        with pytest.raises(SQLAlchemyError):  # what the policy stage turns into "decisions unavailable" (503)
            await RegistrationKinds(ClientRepository(database.engine).get).of("anyone")
    finally:
        await database.dispose()
