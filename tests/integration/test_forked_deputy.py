"""tests.support.forked_deputy: ``python -m deputy`` forked from a host that imported Deputy once.

The tests that use it (``RunningDeputy.cli``, ``KillableDeputy``) rely on it behaving as the process it replaces:
the command's own exit status and its two streams apart, a real pid that a signal reaches, ``Popen``'s
``returncode`` for a killed process (``-9``), and ``subprocess.run``'s timeout that leaves no process behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.support.deputy_process import _wait_http, write_config
from tests.support.forked_deputy import _HOST, run_deputy, start_deputy
from tests.support.sdk_client import free_port


def test_a_command_keeps_its_exit_status_and_its_two_streams() -> None:
    helped = run_deputy(["--help"], dict(os.environ), timeout=60)
    assert helped.returncode == 0 and "Usage:" in helped.stdout and helped.stderr == "", helped
    refused = run_deputy(["no-such-command"], dict(os.environ), timeout=60)
    assert refused.returncode == 2, refused
    assert "No such command" in refused.stderr and "No such command" not in refused.stdout, refused


def test_serve_runs_in_a_process_of_its_own_that_sigkill_ends(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "deputy.toml"
    write_config(config, port, "http://127.0.0.1:9/mcp")
    env = {**os.environ, "DEPUTY_CONFIG": str(config), "DEPUTY_DATA_DIR": str(tmp_path / "data"),
           "DEPUTY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'deputy.db'}"}
    with (tmp_path / "deputy.log").open("wb") as log:
        serving = start_deputy(["serve"], env, log, subprocess.STDOUT)
        try:
            _wait_http(f"http://127.0.0.1:{port}/healthz", serving, "forked deputy serve")
            assert serving.pid != os.getpid() and serving.poll() is None
            os.kill(serving.pid, signal.SIGKILL)
            assert serving.wait(10) == -signal.SIGKILL
        finally:
            serving.kill()


def _host_children() -> set[int]:
    host = _HOST.pid()
    return {int(pid) for task in Path(f"/proc/{host}/task").iterdir()
            for pid in (task / "children").read_text().split()}


def test_a_command_past_its_timeout_is_killed(tmp_path: Path) -> None:
    config = tmp_path / "deputy.toml"
    write_config(config, free_port(), "http://127.0.0.1:9/mcp")
    env = {**os.environ, "DEPUTY_CONFIG": str(config), "DEPUTY_DATA_DIR": str(tmp_path / "data"),
           "DEPUTY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'deputy.db'}"}
    before = _host_children()
    with pytest.raises(subprocess.TimeoutExpired):
        run_deputy(["serve"], env, timeout=1.0)  # serves until stopped
    assert _host_children() <= before, "the timed-out command is still running"
