"""``deputy serve`` with its log format and level chosen, standard error kept apart from standard output.

What the log tests read: standard error holds the log and nothing else (``log_level``, ``log_format``; issue 13),
standard output what ``deputy serve`` prints for the operator at start.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import httpx

from tests.support.databases import database_url
from tests.support.deputy_process import PASSWORD, RunningDeputy, write_config
from tests.support.sdk_client import free_port

SERVE = [sys.executable, "-m", "deputy", "serve"]


@contextmanager
def logging_deputy(directory: Path, upstream_url: str, extra: str, *, level: str, log_format: str,
                   backend: str = "sqlite", users: tuple[tuple[str, str], ...] = ()) -> Iterator[RunningDeputy]:
    """A running Deputy (alice and ``users`` added) whose log goes to ``directory/stderr.log``."""
    port = free_port()
    config = directory / "deputy.toml"
    write_config(config, port, upstream_url, extra)
    with database_url(backend, directory) as url:
        env = {**os.environ, "DEPUTY_CONFIG": str(config), "DEPUTY_DATA_DIR": str(directory / "data"),
               "DEPUTY_DATABASE_URL": url, "DEPUTY_LOG_LEVEL": level, "DEPUTY_LOG_FORMAT": log_format}
        deputy = RunningDeputy(f"http://127.0.0.1:{port}", directory / "data", config, url, upstream_url, env)
        for user, password in (("alice", PASSWORD), *users):
            added = deputy.cli("users", "add", user, "--password", password)
            assert added.returncode == 0, added.stderr
        with (directory / "stderr.log").open("wb") as err, (directory / "stdout.log").open("wb") as out:
            process = subprocess.Popen(SERVE, env=env, stdout=out, stderr=err)
            try:
                _wait_ready(deputy, process)
                yield replace(deputy, process=process)
            finally:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def stopped_log(deputy: RunningDeputy) -> list[str]:
    """Stop ``deputy`` (every line written and flushed) and return the lines of its log."""
    assert deputy.process is not None
    deputy.process.terminate()
    deputy.process.wait(10)
    return (deputy.config.parent / "stderr.log").read_text(errors="replace").splitlines()


def _wait_ready(deputy: RunningDeputy, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        assert process.poll() is None, f"deputy serve exited with {process.returncode}"
        try:
            httpx.get(f"{deputy.url}/healthz", timeout=1.0)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError("deputy serve did not answer")
