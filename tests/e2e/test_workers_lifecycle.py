"""The life of ``deputy serve --workers N``: a worker that dies is replaced, SIGTERM stops them all, a worker that
cannot start is reported once (as a single process's start-up failure), and a worker count out of range is a
configuration error."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.workers_support import wait_for_workers, workers_of
from tests.support.databases import database_url
from tests.support.deputy_process import running_deputy, write_config
from tests.support.forked_deputy import run_deputy
from tests.support.sdk_client import free_port


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def test_a_killed_worker_is_replaced_and_sigterm_stops_every_worker(upstream_url: str, tmp_path: Path) -> None:
    with database_url("sqlite", tmp_path) as url, running_deputy(
            tmp_path, url, upstream_url, environment={"DEPUTY_WORKERS": "2"}) as deputy:
        assert deputy.process is not None
        first = wait_for_workers(deputy, 2)
        deputy.process.send_signal(signal.SIGHUP)  # passed on to each worker: reloads policies, ends nothing
        deadline = time.monotonic() + 30
        while "SIGHUP: passed on to every worker" not in (tmp_path / "deputy.log").read_text():
            assert time.monotonic() < deadline, "the parent did not pass SIGHUP on"
            time.sleep(0.1)
        assert httpx.get(f"{deputy.url}/healthz", timeout=10).status_code == 200
        assert workers_of(deputy) == first and all(_alive(pid) for pid in first), "no worker ended on SIGHUP"

        os.kill(first[0], signal.SIGKILL)
        replaced = wait_for_workers(deputy, 2, other_than={first[0]})
        assert first[1] in replaced, "the other worker went on serving"
        assert httpx.get(f"{deputy.url}/healthz", timeout=10).status_code == 200
        log = (tmp_path / "deputy.log").read_text()
        assert f"(pid {first[0]}) ended with exit code -9; starting another" in log

        deputy.process.send_signal(signal.SIGTERM)
        assert deputy.process.wait(60) == -signal.SIGTERM, "ends by the signal, as one process does"
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in replaced) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in replaced), "every worker stopped with the parent"
        assert not list((deputy.data_dir / "run").glob("worker-*.sock")), "each worker removed its socket"


def test_a_worker_that_cannot_start_is_reported_once_and_nothing_serves(upstream_url: str, tmp_path: Path) -> None:
    # Worker 1 serves /metrics on the configured port + 1, held here: it cannot start.
    holder = socket.socket()
    for _ in range(50):
        metrics = free_port()
        try:
            holder.bind(("127.0.0.1", metrics + 1))
            break
        except OSError:
            continue
    holder.listen()
    port = free_port()
    config = tmp_path / "deputy.toml"
    write_config(config, port, upstream_url, f'\n[metrics]\nlisten = "127.0.0.1:{metrics}"\n')
    env = {**os.environ, "DEPUTY_CONFIG": str(config), "DEPUTY_DATA_DIR": str(tmp_path / "data"),
           "DEPUTY_WORKERS": "2"}
    with holder:
        done = subprocess.run([sys.executable, "-m", "deputy", "serve"], env=env, capture_output=True, text=True,
                              timeout=180, check=False)
    assert done.returncode == 4, done.stdout + done.stderr  # EXIT_ADDRESS, as for one process
    assert done.stderr.count(f"127.0.0.1:{metrics + 1}") == 1, done.stderr
    assert "Deputy on" not in done.stdout, "no banner: Deputy did not start"
    assert "Traceback" not in done.stderr
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)


@pytest.mark.parametrize("given", ["0", "65", "two", "-1"])
def test_a_worker_count_out_of_range_is_a_configuration_error(upstream_url: str, tmp_path: Path, given: str) -> None:
    config = tmp_path / "deputy.toml"
    write_config(config, free_port(), upstream_url)
    env = {**os.environ, "DEPUTY_CONFIG": str(config), "DEPUTY_DATA_DIR": str(tmp_path / "data"),
           "DEPUTY_WORKERS": given}
    done = run_deputy(["serve"], env, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "workers: must be an integer from 1 to 64" in done.stderr


def test_the_workers_option_overrides_the_configuration(upstream_url: str, tmp_path: Path) -> None:
    with database_url("sqlite", tmp_path) as url, running_deputy(
            tmp_path, url, upstream_url, environment={"DEPUTY_WORKERS": "1"}) as deputy:
        assert deputy.process is not None
        assert workers_of(deputy) == [], "one worker: the process serves itself"
    config = tmp_path / "deputy.toml"
    env = {**os.environ, "DEPUTY_CONFIG": str(config), "DEPUTY_DATA_DIR": str(tmp_path / "data2")}
    refused = run_deputy(["serve", "--workers", "65"], env, timeout=120)
    assert refused.returncode == 2 and "--workers" in refused.stderr


def test_workers_stop_when_the_parent_is_killed(upstream_url: str, tmp_path: Path) -> None:
    with database_url("sqlite", tmp_path) as url, running_deputy(
            tmp_path, url, upstream_url, environment={"DEPUTY_WORKERS": "2"}) as deputy:
        assert deputy.process is not None
        workers = wait_for_workers(deputy, 2)
        deputy.process.kill()  # SIGKILL: the parent stops nobody; each worker sees its pipe to the parent end
        deputy.process.wait(30)
        deadline = time.monotonic() + 60
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in workers), "no worker outlives its parent"
