"""What "storage is unavailable" means: the database failed, never any ``OSError`` (issue 17, item 7).

``deputy.app`` used to answer every ``OSError`` raised by a request with 503
``temporarily_unavailable`` "storage is unavailable", while ``StorageUnavailable`` was never
raised. Now a driver socket that cannot reach the database becomes ``StorageUnavailable``
(:mod:`deputy.storage.db`) and only the database's failures (and the audit log's) are mapped;
an ``OSError`` of anything else is a fault of Deputy's own, answered 500.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import jinja2
import pytest

from deputy.app import create_app
from deputy.config import Settings, load_settings
from deputy.storage.db import Database, StorageUnavailable
from deputy.web import pages


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A loopback port bound but not listening: every connection to it is refused (ECONNREFUSED)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as bound:
        bound.bind(("127.0.0.1", 0))
        yield bound.getsockname()[1]


def settings_for(tmp_path: Path, database_url: str | None = None) -> Settings:
    config = tmp_path / "deputy.toml"
    database = f'database_url = "{database_url}"\n' if database_url else ""
    config.write_text(f'''public_url = "https://deputy.example.com"
data_dir = "{tmp_path / 'data'}"
{database}
[servers.demo]
url = "http://127.0.0.1:9/mcp"
scopes = ["demo:tools"]
''')
    return load_settings(config, environ={})


def client_for(settings: Settings) -> httpx.AsyncClient:
    # No lifespan: nothing here needs the database to have been migrated, only the answer to a failing one.
    transport = httpx.ASGITransport(app=create_app(settings), raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="https://deputy.example.com")


async def test_a_database_that_refuses_connections_is_storage_unavailable(refusing_port: int) -> None:
    """Issue 17: the driver's ConnectionRefusedError (an OSError SQLAlchemy does not wrap) reached callers raw."""
    database = Database(f"postgresql+asyncpg://deputy@127.0.0.1:{refusing_port}/deputy")
    try:
        with pytest.raises(StorageUnavailable) as raised:
            await database.check_writable()
    finally:
        await database.dispose()
    assert isinstance(raised.value.__cause__, ConnectionRefusedError)


async def test_a_request_while_the_database_is_unreachable_is_refused_503(tmp_path: Path, refusing_port: int) -> None:
    settings = settings_for(tmp_path, f"postgresql+asyncpg://deputy@127.0.0.1:{refusing_port}/deputy")
    async with client_for(settings) as http:
        response = await http.post("/token", data={"grant_type": "refresh_token", "refresh_token": "r",
                                                   "client_id": "someone"})
    assert response.status_code == 503
    assert response.json() == {"error": "temporarily_unavailable", "error_description": "storage is unavailable"}
    assert response.headers["retry-after"] == "5"
    assert response.headers["cache-control"] == "no-store"


async def test_an_oserror_that_is_not_the_databases_is_not_storage_unavailable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 17: a page template that cannot be read (PermissionError) was answered "storage is unavailable"."""
    def unreadable(name: str) -> str:
        raise PermissionError(13, "Permission denied", name)

    monkeypatch.setattr(pages._env, "loader", jinja2.FunctionLoader(unreadable))
    async with client_for(settings_for(tmp_path)) as http:
        response = await http.get("/authorize")  # no client_id: answered with the error page, from a template
    assert response.status_code == 500
    assert b"storage is unavailable" not in response.content
