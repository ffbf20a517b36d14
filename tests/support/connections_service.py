"""Setup shared by tests/integration/test_connections_service_*.py: a Deputy (:class:`deputy.services.Services`) on
the module's database whose ``ext`` server is ``credentials = "oauth"`` in front of a real authorization server
(oidc-provider, tests/support/upstream_oauth.py), and the steps of a person connecting her account to it.

The fixtures (:func:`vault_key`, :func:`data`, :func:`services`) are used by name: a test module imports them and
lists them in ``__all__``, as it does ``oauth_upstream``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pytest
from sqlalchemy import select

from deputy.act_chain import Actor
from deputy.config import Settings, load_settings
from deputy.connections.vault import new_key
from deputy.gateway.principal import Principal
from deputy.policy.user_attributes import UserAttributes
from deputy.services import Services
from deputy.storage.connections import token_context
from deputy.storage.tables import audit_leaves
from tests.integration.conftest import unique
from tests.support.config_files import config_file
from tests.support.upstream_oauth import ProtectedUpstream, UpstreamAuthServer

Upstream = tuple[UpstreamAuthServer, ProtectedUpstream]
PUBLIC_URL = "http://127.0.0.1:8765"


def settings_for(directory: Path, data: Path, url: str, upstream: ProtectedUpstream, vault_key: str) -> Settings:
    """A deputy.toml in ``directory``; ``data``, the data directory, is the module's (its audit signing key goes
    with the module's database)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = config_file(directory, (
        f'public_url = "{PUBLIC_URL}"\ndata_dir = "{data}"\ndatabase_url = "{url}"\n\n'
        f'[servers.ext]\nurl = "{upstream.url}"\ncredentials = "oauth"\n'
        f'[servers.ext.oauth]\ntrusted_hosts = ["127.0.0.1"]\n'))
    return load_settings(path, environ={"DEPUTY_VAULT_KEY": vault_key})


@pytest.fixture(scope="module")
def vault_key() -> str:
    return new_key()


@pytest.fixture(scope="module")
def data(url: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture
async def services(url: str, data: Path, tmp_path: Path, oauth_upstream: Upstream, vault_key: str
                   ) -> AsyncIterator[Services]:
    opened = Services.open(settings_for(tmp_path, data, url, oauth_upstream[1], vault_key))
    await opened.start()
    yield opened
    await opened.close()


LOCAL_USER = UserAttributes(idp="local")


def principal(user_id: str, *, attributes: UserAttributes = LOCAL_USER, actors: tuple[Actor, ...] = ()) -> Principal:
    return Principal(user=user_id, agent="some-client", scopes=frozenset({"ext:tools"}), token_id="t",
                     server="ext", actors=actors, user_attributes=attributes)


async def new_user(services: Services, name: str = "alice") -> str:
    return (await services.users.add(unique(name), "a long passphrase")).user_id


def query_of(location: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(location).query))


async def approved(upstream: Upstream, services: Services, user_id: str, browser: str, login: str = "alice"
                   ) -> dict[str, str]:
    """Start connecting ``user_id`` in ``browser`` and sign in at the authorization server as ``login``: the
    callback's query (not yet handed to Deputy)."""
    authorization_url = await services.connections.start("ext", user_id, browser)
    return query_of(await asyncio.to_thread(upstream[0].approve, authorization_url, login))


async def connected(upstream: Upstream, services: Services, user_id: str) -> None:
    browser = unique("browser")
    assert await services.connections.finish(await approved(upstream, services, user_id, browser),
                                             user_id, browser, "ext") == "ext"


async def records(services: Services, record_type: str) -> list[dict[str, Any]]:
    async with services.database.engine.connect() as conn:
        rows = (await conn.execute(select(audit_leaves.c.record).order_by(audit_leaves.c.idx))).scalars().all()
    return [r for r in (json.loads(bytes(row)) for row in rows) if r["type"] == record_type]


async def whoami(upstream: ProtectedUpstream, headers: Any) -> int:
    """The status the upstream answers a request carrying ``headers`` (401 without a token it accepts)."""
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.post(upstream.url, headers={**dict(headers), "Accept": "application/json, "
                                   "text/event-stream"}, json={"jsonrpc": "2.0", "id": 1, "method": "initialize",
                                   "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                                              "clientInfo": {"name": "t", "version": "1"}}})
    return answer.status_code


def ext(services: Services) -> Any:
    return services.settings.servers["ext"]


def sealed_refresh(services: Services, user_id: str, token: str) -> bytes:
    assert services.connections.parts.vault is not None
    return services.connections.parts.vault.seal(token, token_context(user_id, "ext", "refresh_token"))
