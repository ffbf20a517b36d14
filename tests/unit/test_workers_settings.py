"""``workers`` in the configuration, and what the supervisor works out before it forks (deputy.cli.workers)."""

from __future__ import annotations

import dataclasses
import os
import socket
import stat
from pathlib import Path

import pytest

from deputy.cli.worker_process import bind_unix, worker_settings
from deputy.cli.workers import prepare_run_dir, worker_budget
from deputy.config import ConfigError, Settings, load_settings
from deputy.listener import MIN_CONNECTIONS, ListenerBudget

CONFIG = '''
public_url = "http://127.0.0.1:8000"
[servers.demo]
url = "http://127.0.0.1:8001/mcp"
scopes = ["demo:tools"]
'''


def _settings(tmp_path: Path, extra: str = "", environ: dict[str, str] | None = None) -> Settings:
    path = tmp_path / "deputy.toml"
    path.write_text(extra + CONFIG)
    return load_settings(path, environ={"DEPUTY_DATA_DIR": str(tmp_path / "data"), **(environ or {})})


def test_one_worker_unless_told(tmp_path: Path) -> None:
    assert _settings(tmp_path).workers == 1
    assert _settings(tmp_path, "workers = 4\n").workers == 4
    assert _settings(tmp_path, "workers = 4\n", {"DEPUTY_WORKERS": "2"}).workers == 2


@pytest.mark.parametrize("given", ["workers = 0\n", "workers = 65\n", "workers = true\n", 'workers = "two"\n',
                                   "workers = 1.5\n"])
def test_a_worker_count_out_of_range_names_the_key(tmp_path: Path, given: str) -> None:
    with pytest.raises(ConfigError, match="workers: must be an integer from 1 to 64"):
        _settings(tmp_path, given)


def test_the_listener_budget_is_shared_out_and_the_backlog_kept() -> None:
    assert worker_budget(ListenerBudget(4096, 2048), 2) == ListenerBudget(2048, 2048)
    assert worker_budget(ListenerBudget(100, 64), 64) == ListenerBudget(MIN_CONNECTIONS, 64)


def test_worker_i_serves_metrics_on_the_configured_port_plus_i(tmp_path: Path) -> None:
    base = _settings(tmp_path)
    with_metrics = dataclasses.replace(base, telemetry=dataclasses.replace(base.telemetry,
                                                                           metrics_listen=("127.0.0.1", 9464)))
    assert worker_settings(with_metrics, 0).telemetry.metrics_listen == ("127.0.0.1", 9464)
    assert worker_settings(with_metrics, 3).telemetry.metrics_listen == ("127.0.0.1", 9467)
    any_port = dataclasses.replace(base, telemetry=dataclasses.replace(base.telemetry,
                                                                       metrics_listen=("127.0.0.1", 0)))
    assert worker_settings(any_port, 3).telemetry.metrics_listen == ("127.0.0.1", 0)
    assert worker_settings(base, 1) is base


def test_the_run_directory_is_private_and_emptied_of_stale_sockets(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir(mode=0o755)
    os.chmod(run, 0o755)
    stale = bind_unix(run / "worker-3.sock")
    stale.close()  # the file stays, as after a worker killed by SIGKILL
    (run / "notes.txt").write_text("not ours")
    assert prepare_run_dir(tmp_path) == run
    assert stat.S_IMODE(run.stat().st_mode) == 0o700
    assert not (run / "worker-3.sock").exists()
    assert (run / "notes.txt").exists(), "only the workers' sockets are removed"


def test_a_worker_socket_is_created_owner_only_and_replaces_a_stale_one(tmp_path: Path) -> None:
    path = tmp_path / "worker-0.sock"
    bind_unix(path).close()
    sock = bind_unix(path)
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(str(path))
    finally:
        sock.close()

