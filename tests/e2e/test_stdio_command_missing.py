"""A stdio server whose command is gone when a session starts (issue 13): a JSON-RPC error naming the server and
one warning line, never a 500 with a traceback.

The command exists when Deputy starts (a start-time check would refuse a missing one) and is removed, or made
not executable, afterwards: a package removed or a deploy half done while Deputy runs.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.databases import database_url
from tests.support.deputy_process import RunningDeputy, running_deputy
from tests.support.oauth_flow import mcp_post, tokens_for_alice
from tests.support.sdk_client import free_port


@pytest.fixture(scope="module")
def metrics_port() -> int:
    """Chosen when the module's Deputy starts, not at collection: minutes later it may have been taken."""
    return free_port()


@pytest.fixture(scope="module")
def commands(upstream_url: str, metrics_port: int,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RunningDeputy, Path, Path]]:
    """A Deputy with two stdio servers whose commands stop working once it runs; its metrics on ``metrics.port``."""
    directory = tmp_path_factory.mktemp("deputy-stdio-missing")
    gone, locked = directory / "gone-server", directory / "locked-server"
    for script in (gone, locked):
        script.write_text("#!/bin/sh\nexit 0\n")
        script.chmod(0o755)
    extra = "".join(f'\n[servers.{name}]\ncommand = {json.dumps([str(path)])}\nscopes = ["{name}:tools"]\n'
                    for name, path in (("gone", gone), ("locked", locked)))
    extra += f'\n[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n'
    with database_url("sqlite", directory) as url, running_deputy(directory, url, upstream_url, extra) as deputy:
        gone.unlink()
        locked.chmod(0o644)
        yield deputy, gone, locked


def _log(deputy: RunningDeputy) -> str:
    return (deputy.data_dir.parent / "deputy.log").read_text(errors="replace")


@pytest.mark.parametrize(("server", "reason"), [("gone", "command not found"), ("locked", "command not executable")])
async def test_a_command_that_cannot_start_is_a_json_rpc_error_and_one_warning(
        commands: tuple[RunningDeputy, Path, Path], metrics_port: int, server: str, reason: str) -> None:
    """Issue 13: the first call was answered 500 with uvicorn's traceback of FileNotFoundError."""
    deputy, gone, locked = commands
    path = gone if server == "gone" else locked
    token, _ = await tokens_for_alice(deputy, deputy.resource(server))
    for attempt in (1, 2):
        answer = await mcp_post(deputy, token, server=server)
        assert answer.status_code == 502, answer.text
        assert answer.json() == {"jsonrpc": "2.0", "id": 1, "error": {
            "code": -32603, "message": f"upstream {server} could not be started"}}
        assert str(path) not in answer.text, "the operator's command line stays with the operator"
        warnings = [line for line in _log(deputy).splitlines() if f"upstream {server} could not be started" in line]
        assert len(warnings) == attempt, warnings
        assert f"{reason}: {path}" in warnings[-1]
    assert "Traceback" not in _log(deputy), _log(deputy)[-3000:]
    async with httpx.AsyncClient(timeout=10) as http:
        exposition = (await http.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
    assert f'deputy_upstream_errors_total{{kind="process",server="{server}"}} 2.0' in exposition
