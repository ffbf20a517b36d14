"""`deputy demo` (what `make demo` runs): embedded defaults, a printed password, a working flow."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from mcp.shared.exceptions import MCPError

from tests.support.forked_deputy import run_deputy
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


def _wait_healthy(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    for _ in range(600):
        if process.poll() is not None:
            raise AssertionError(f"deputy demo exited: {log.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError(f"deputy demo did not answer: {log.read_text()}")


def _demo_in(directory: Path, port: int) -> tuple[subprocess.Popen[bytes], Path]:
    """``make demo`` as a user runs it in ``directory``: no --upstream-port, the data in ``directory/.deputy``."""
    directory.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEPUTY_")} | {"DEPUTY_PORT": str(port)}
    log = directory / "demo.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "deputy", "demo"], env=env, stdout=out,
                                   stderr=subprocess.STDOUT, cwd=directory)
    return process, log


def _admin(directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DEPUTY_")}
    return run_deputy(list(args), env, timeout=120, cwd=directory)


def test_two_demos_side_by_side_then_admin_commands_without_a_configuration(tmp_path: Path) -> None:
    """Issue 13, item 6: the demo upstream was bound to 8001, so a second demo failed after its banner; and every
    admin command refused the demo's state ("configure at least one upstream server")."""
    first, second = tmp_path / "first", tmp_path / "second"
    ports = [free_port(), free_port()]
    demos = [_demo_in(first, ports[0]), _demo_in(second, ports[1])]
    try:
        for (process, log), port in zip(demos, ports, strict=True):
            _wait_healthy(process, port, log)
        upstreams = {re.findall(r"Demo upstream \(direct\):\s+(\S+)", log.read_text())[0] for _p, log in demos}
        assert len(upstreams) == 2, "each demo's upstream has a port of its own"
    finally:
        for process, _log in demos:
            process.terminate()
            process.wait(15)
    # The demo has stopped: the admin commands need its recorded configuration and its data, not its upstream.
    for args in (("approvals", "list"), ("users", "list"), ("audit", "verify")):
        result = _admin(first, *args)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
    assert "alice" in _admin(first, "users", "list").stdout
    explained = _admin(first, "policy", "explain", "no-such-decision")
    assert "no decision no-such-decision in the audit log" in explained.stdout + explained.stderr, explained


def test_a_demo_port_in_use_is_one_line_before_the_banner(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("DEPUTY_")} | {"DEPUTY_PORT": str(port)}
        result = subprocess.run([sys.executable, "-m", "deputy", "demo"], env=env, cwd=tmp_path,
                                capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 4, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert f"127.0.0.1:{port}" in result.stderr and "DEPUTY_PORT=" in result.stderr
    assert "Deputy demo" not in result.stdout, "no banner for a demo that did not start"
