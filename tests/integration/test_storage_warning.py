"""Issue 13, item 5: a database lost at run time is a 503 for each request and one WARNING a minute in the log, not
an error line (or a traceback) per request."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from deputy.app import create_app
from deputy.config import load_settings


@pytest.fixture
def refusing_port() -> Iterator[int]:
    """A loopback port bound but not listening: every connection to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as bound:
        bound.bind(("127.0.0.1", 0))
        yield bound.getsockname()[1]


async def test_many_refused_requests_are_one_warning(tmp_path: Path, refusing_port: int,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    config = tmp_path / "deputy.toml"
    config.write_text(f'public_url = "https://deputy.example.com"\ndata_dir = "{tmp_path / "data"}"\n'
                      f'database_url = "postgresql+asyncpg://deputy@127.0.0.1:{refusing_port}/deputy"\n'
                      '[servers.demo]\nurl = "http://127.0.0.1:9/mcp"\nscopes = ["demo:tools"]\n')
    app = create_app(load_settings(config, environ={}))
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    caplog.set_level(logging.DEBUG, logger="deputy.app")
    async with httpx.AsyncClient(transport=transport, base_url="https://deputy.example.com") as http:
        for _ in range(5):
            response = await http.post("/token", data={"grant_type": "refresh_token", "refresh_token": "r",
                                                       "client_id": "someone"})
            assert response.status_code == 503
    records = [r for r in caplog.records if r.name == "deputy.app" and "storage unavailable" in r.getMessage()]
    assert [r.levelname for r in records] == ["WARNING"], records
    assert records[0].exc_info is None, "no traceback"
