"""Issue 13, item 5: whatever stops ``deputy serve`` from starting is one line naming the cause and the fix, with the
exit code README's "Exit codes" documents, before any banner, and no traceback unless ``--log-level debug``.

Before, PostgreSQL unreachable, a port in use, an unwritable data directory, and ``deputy users list`` with no
database each printed a 100-500-line traceback, and a new port with an existing data directory refused to start
(the audit key was named after the old one).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.databases import postgres_available, require
from tests.support.deputy_process import _wait_http
from tests.support.forked_deputy import run_deputy
from tests.support.sdk_client import free_port

CLOSED_PORT_DB = "postgresql+asyncpg://deputy:secret-pw@127.0.0.1:{port}/deputy"
NO_SUCH_ROLE_DB = "postgresql+asyncpg://no_such_role_for_deputy:secret-pw@127.0.0.1:5432/test"


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("DEPUTY_")}


def _config(directory: Path, port: int, extra_top: str = "", server: str = "", data_dir: Path | None = None) -> Path:
    """A configuration on ``port`` in front of an HTTP upstream nobody listens on (not contacted at start)."""
    config = directory / "deputy.toml"
    config.write_text(f'host = "127.0.0.1"\nport = {port}\ndata_dir = "{data_dir or directory / "data"}"\n'
                      f'{extra_top}\n[servers.x]\nurl = "http://127.0.0.1:9/mcp"\nscopes = ["x:tools"]\n{server}')
    return config


def _deputy(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_deputy(list(args), env or _env(), timeout=120, cwd=cwd)


def _assert_one_line(result: subprocess.CompletedProcess[str], code: int, *named: str) -> str:
    assert "Traceback" not in result.stderr + result.stdout, result.stderr[-3000:]
    assert result.returncode == code, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    for phrase in named:
        assert phrase in lines[0], lines[0]
    assert "Deputy on" not in result.stdout, "the failure comes before the banner"
    return lines[0]


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port bound but not listening: every connection to it is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as bound:
        bound.bind(("127.0.0.1", 0))
        yield bound.getsockname()[1]


def test_postgresql_unreachable(tmp_path: Path, closed_port: int) -> None:
    url = CLOSED_PORT_DB.format(port=closed_port)
    config = _config(tmp_path, free_port(), f'database_url = "{url}"')
    line = _assert_one_line(_deputy("serve", "--config", str(config), cwd=tmp_path), 3,
                            "cannot reach the database", f"127.0.0.1:{closed_port}", "DEPUTY_DATABASE_URL")
    assert "secret-pw" not in line, "the password is never printed"


def test_postgresql_unreachable_with_debug_shows_the_traceback(tmp_path: Path, closed_port: int) -> None:
    config = _config(tmp_path, free_port(), f'database_url = "{CLOSED_PORT_DB.format(port=closed_port)}"')
    result = _deputy("serve", "--config", str(config), "--log-level", "debug", cwd=tmp_path)
    assert result.returncode == 3, result.stderr
    assert "Traceback" in result.stderr
    assert "cannot reach the database" in result.stderr.splitlines()[-1]


def test_postgresql_refuses_the_role(tmp_path: Path) -> None:
    require("PostgreSQL on 127.0.0.1:5432 (trust auth)", postgres_available())
    config = _config(tmp_path, free_port(), f'database_url = "{NO_SUCH_ROLE_DB}"')
    line = _assert_one_line(_deputy("serve", "--config", str(config), cwd=tmp_path), 3,
                            "refused Deputy", "no_such_role_for_deputy", "database_url")
    assert "secret-pw" not in line


@pytest.mark.parametrize("command", [("users", "list"), ("approvals", "list"), ("audit", "tail")])
def test_admin_commands_with_no_database(tmp_path: Path, closed_port: int, command: tuple[str, str]) -> None:
    config = _config(tmp_path, free_port(), f'database_url = "{CLOSED_PORT_DB.format(port=closed_port)}"')
    _assert_one_line(_deputy(*command, "--config", str(config), cwd=tmp_path), 3, "cannot reach the database")


def test_port_in_use(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = _config(tmp_path, port)
        _assert_one_line(_deputy("serve", "--config", str(config), cwd=tmp_path), 4,
                         f"127.0.0.1:{port}", "in use", "DEPUTY_PORT")


def test_data_dir_unwritable(tmp_path: Path) -> None:
    # A path under a regular file: no directory can be made there, even by root (chmod does not stop root).
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    config = _config(tmp_path, free_port(), data_dir=blocker / "data")
    _assert_one_line(_deputy("serve", "--config", str(config), cwd=tmp_path), 5,
                     str(blocker / "data"), "cannot be written", "DEPUTY_DATA_DIR")


def test_policy_directory_missing(tmp_path: Path) -> None:
    config = _config(tmp_path, free_port(), server='policies = "no-such-policies"\n')
    _assert_one_line(_deputy("serve", "--config", str(config), cwd=tmp_path), 2,
                     "servers.x.policies", "no-such-policies", "is not a directory")
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("program", ["deputy-no-such-program", "/nonexistent/deputy-server"])
def test_stdio_command_missing(tmp_path: Path, program: str) -> None:
    config = _config(tmp_path, free_port())
    with config.open("a") as handle:
        handle.write(f'\n[servers.local]\ncommand = {json.dumps([program, "--stdio"])}\nscopes = ["local:tools"]\n')
    _assert_one_line(_deputy("serve", "--config", str(config), cwd=tmp_path), 2,
                     "servers.local.command", program, "not found")


def test_serve_without_a_configuration_says_how_to_give_one(tmp_path: Path) -> None:
    _assert_one_line(_deputy("serve", cwd=tmp_path), 2, "--config", "DEPUTY_CONFIG", "deputy init")
    _assert_one_line(_deputy("users", "list", cwd=tmp_path), 2, "no configuration", "deputy demo")


def _serve_until_healthy(config: Path, port: int, cwd: Path) -> None:
    """Start ``deputy serve``, wait until it answers, stop it (SIGTERM)."""
    log = cwd / f"serve-{port}.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "deputy", "serve", "--config", str(config)], env=_env(),
                                   cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_http(f"http://127.0.0.1:{port}/healthz", process, "deputy serve")
        assert httpx.get(f"http://127.0.0.1:{port}/healthz").status_code == 200
    except RuntimeError:
        process.wait(30)
        raise AssertionError(f"deputy serve did not start: {log.read_text()[-3000:]}") from None
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(30)


def test_a_new_port_keeps_the_data_directory_and_its_audit_log(tmp_path: Path) -> None:
    """Issue 13: the audit key was named after public_url's host:port, so a new port refused to start."""
    first_port, second_port = free_port(), free_port()
    _serve_until_healthy(_config(tmp_path, first_port), first_port, tmp_path)
    _serve_until_healthy(_config(tmp_path, second_port), second_port, tmp_path)
    key = (tmp_path / "data" / "audit.key").read_text()
    assert f"+127.0.0.1:{first_port}/deputy-audit+" in key, "the log keeps the origin it was created with"


def test_an_explicit_origin_for_another_log_is_one_line(tmp_path: Path) -> None:
    port = free_port()
    created = _deputy("migrate", "--config", str(_config(tmp_path, port)), cwd=tmp_path)
    assert created.returncode == 0, created.stderr
    config = _config(tmp_path, port, server='\n[audit]\norigin = "elsewhere.example/deputy-audit"\n')
    _assert_one_line(_deputy("serve", "--config", str(config), cwd=tmp_path), 6,
                     "elsewhere.example/deputy-audit", f"127.0.0.1:{port}/deputy-audit", "remove audit.origin")


def test_policies_that_cannot_be_used(tmp_path: Path) -> None:
    (tmp_path / "policies").mkdir()
    (tmp_path / "policies" / "broken.cedar").write_text("permit(principal, action, resource)\n")  # no ';'
    config = _config(tmp_path, free_port(), server='policies = "policies"\n')
    _assert_one_line(_deputy("serve", "--config", str(config), cwd=tmp_path), 2,
                     "policies cannot be used", "broken.cedar:1:", "deputy policy validate")


def test_metrics_address_in_use(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = _config(tmp_path, free_port(), f'[metrics]\nlisten = "127.0.0.1:{port}"\n')
        _assert_one_line(_deputy("serve", "--config", str(config), cwd=tmp_path), 4,
                         f"metrics.listen 127.0.0.1:{port}", "metrics.listen to another address")
