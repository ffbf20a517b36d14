"""`deputy demo` (what `make demo` runs): embedded defaults, a printed password, a working flow."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from mcp.shared.exceptions import MCPError

from tests.support.sdk_client import free_port, sdk_oauth_client


def _start_demo(upstream_port: int, env: dict[str, str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([sys.executable, "-m", "deputy", "demo", "--upstream-port", str(upstream_port)],
                                env=env, stdout=out, stderr=subprocess.STDOUT, cwd=cwd)


async def test_demo_prints_credentials_and_serves_the_sdk_client(tmp_path: Path) -> None:
    port, upstream_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEPUTY_")}
    env.update({"DEPUTY_PORT": str(port), "DEPUTY_DATA_DIR": str(tmp_path / "data")})
    log = tmp_path / "demo.log"
    process = _start_demo(upstream_port, env, log, tmp_path)
    try:
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient() as http:
            for _ in range(300):
                if process.poll() is not None:
                    raise AssertionError(f"deputy demo exited: {log.read_text()}")
                try:
                    if (await http.get(f"{base}/healthz")).status_code == 200:
                        break
                except httpx.HTTPError:
                    await asyncio.sleep(0.1)
        printed = log.read_text()
        assert f"{base}/mcp/demo" in printed
        match = re.search(r"Sign in as alice / (\S+)", printed)
        assert match, printed
        password = match.group(1)
        assert len(password) >= 12, "an unset DEPUTY_DEMO_PASSWORD gives a random one"
        async with sdk_oauth_client(f"{base}/mcp/demo", "alice", password) as (client, _run):
            result = await client.call_tool("add", {"a": 1, "b": 2})
            assert result.structured_content == {"result": 3}
            # The demo runs with its policies: a protected id is an explicit denial naming the rule.
            with pytest.raises(MCPError) as denied:
                await client.call_tool("delete_user", {"id": 5, "reason": "demo"})
            assert denied.value.error.code == -32003
            assert isinstance(denied.value.error.data, dict)
            assert denied.value.error.data["policies"] == ["demo-protect-low-ids"]
        assert re.search(r"bob / \S{12,}", printed), "the demo names an approver"
        database = tmp_path / "data" / "deputy.db"
        assert oct(database.stat().st_mode & 0o777) == "0o600", "the database is readable by its owner only"
        assert oct((tmp_path / "data" / "keys").stat().st_mode & 0o777) == "0o700"
    finally:
        process.terminate()
        process.wait(15)
