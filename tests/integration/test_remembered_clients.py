"""Issue 16: the token endpoint authenticates a client against a remembered copy of its row, never a stale one.

Two repositories on one database stand for two replicas: one remembers a client, the other changes it. A grant
written with ``confirm=<the copy>`` is refused when what authentication read has changed (``ClientChanged``) or
the client is no longer active (``ClientNotActive``) — on both backends, whatever the remembering replica knows.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event

from deputy.storage.clients import ClientRepository
from deputy.storage.db import Database
from deputy.storage.grants import ClientChanged, ClientNotActive, GrantRepository
from tests.integration.conftest import unique

RESOURCE = "https://deputy.example.com/mcp/demo"
KEY = {"kty": "EC", "crv": "P-256", "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
       "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0", "kid": "k1"}


async def add_client(repository: ClientRepository, secret: str = "s3cret-one", **extra: Any) -> str:
    client_id = unique("agent")
    await repository.put(client_id=client_id, client_name=client_id, redirect_uris=[], source="cli",
                         token_endpoint_auth_method="client_secret_basic", client_secret=secret,
                         grant_types=["client_credentials"], **extra)
    return client_id


@pytest.fixture
def statements(db: Database) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        seen.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", record)
    yield seen
    event.remove(db.engine.sync_engine, "before_cursor_execute", record)


async def test_an_active_client_is_read_once_then_remembered(db: Database, statements: list[str]) -> None:
    here = ClientRepository(db.engine)
    client_id = await add_client(here)
    statements.clear()
    first = await here.remembered(client_id)
    second = await here.remembered(client_id)
    assert first is not None and first == second
    assert len(statements) == 1


async def test_unknown_and_inactive_clients_are_not_remembered(db: Database, statements: list[str]) -> None:
    """Unknown ids would let a caller fill memory; a pending client approved elsewhere must be served at once."""
    here = ClientRepository(db.engine)
    pending = await add_client(here, status="pending")
    statements.clear()
    for _ in range(2):
        assert await here.remembered("no-such-client") is None
        found = await here.remembered(pending)
        assert found is not None and found.status == "pending"
    assert len(statements) == 4


async def test_a_change_through_this_repository_forgets_the_copy(db: Database) -> None:
    here = ClientRepository(db.engine)
    client_id = await add_client(here)
    assert (await here.remembered(client_id)) is not None
    await here.set_status(client_id, "denied")
    found = await here.remembered(client_id)
    assert found is not None and found.status == "denied"


@pytest.mark.parametrize("change", ["secret", "keys", "method", "grant_types"])
async def test_a_copy_older_than_a_change_on_another_replica_refuses_the_grant(db: Database, change: str) -> None:
    """The attack: a secret rotated (or keys replaced…) on replica B still authenticates on replica A, which
    remembered the client. A's grant transaction compares the row it holds with A's copy and refuses."""
    here, elsewhere = ClientRepository(db.engine), ClientRepository(db.engine)
    grants = GrantRepository(db.engine, access_token_ttl=600)
    client_id = await add_client(here)
    copy = await here.remembered(client_id)
    assert copy is not None
    stored = await elsewhere.get(client_id)
    assert stored is not None
    if change == "secret":
        await elsewhere.put(client_id=client_id, client_name=client_id, redirect_uris=[], source="cli",
                            token_endpoint_auth_method="client_secret_basic", client_secret="s3cret-two",
                            grant_types=["client_credentials"])
    elif change == "keys":
        await elsewhere.replace(stored.__class__(**{**_fields(stored), "jwks": {"keys": [KEY]}}))
    elif change == "method":
        await elsewhere.replace(stored.__class__(**{**_fields(stored), "token_endpoint_auth_method": "none"}))
    else:
        await elsewhere.replace(stored.__class__(**{**_fields(stored), "grant_types": ("authorization_code",)}))
    assert await here.remembered(client_id) == copy  # replica A still remembers the old row
    with pytest.raises(ClientChanged):
        await grants.create(client_id=client_id, user_id=client_id, resource=RESOURCE, scope="demo:tools",
                            auth_time=1_700_000_000, confirm=copy)
    fresh = await here.get(client_id)
    assert fresh is not None
    await grants.create(client_id=client_id, user_id=client_id, resource=RESOURCE, scope="demo:tools",
                        auth_time=1_700_000_000, confirm=fresh)


async def test_a_client_denied_on_another_replica_gets_no_grant_from_a_copy(db: Database) -> None:
    here, elsewhere = ClientRepository(db.engine), ClientRepository(db.engine)
    grants = GrantRepository(db.engine, access_token_ttl=600)
    client_id = await add_client(here)
    copy = await here.remembered(client_id)
    await elsewhere.set_status(client_id, "denied")
    with pytest.raises(ClientNotActive):
        await grants.create(client_id=client_id, user_id=client_id, resource=RESOURCE, scope="demo:tools",
                            auth_time=1_700_000_000, confirm=copy)


async def test_a_change_authentication_does_not_read_refuses_nothing(db: Database) -> None:
    here, elsewhere = ClientRepository(db.engine), ClientRepository(db.engine)
    grants = GrantRepository(db.engine, access_token_ttl=600)
    client_id = await add_client(here)
    copy = await here.remembered(client_id)
    stored = await elsewhere.get(client_id)
    assert copy is not None and stored is not None
    await elsewhere.replace(stored.__class__(**{**_fields(stored), "client_name": "Renamed"}))
    grant = await grants.create(client_id=client_id, user_id=client_id, resource=RESOURCE, scope="demo:tools",
                                auth_time=1_700_000_000, confirm=copy)
    assert grant.client_id == client_id


def _fields(client: Any) -> dict[str, Any]:
    return {name: getattr(client, name) for name in client.__dataclass_fields__}
