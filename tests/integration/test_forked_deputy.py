"""tests.support.forked_deputy: ``python -m deputy`` forked from a host that imported Deputy once.

The tests that use it (``RunningDeputy.cli``, ``KillableDeputy``) rely on it behaving as the process it replaces:
the command's own exit status and its two streams apart, a real pid that a signal reaches, ``Popen``'s
``returncode`` for a killed process (``-9``) as soon as it is dead, and ``subprocess.run``'s timeout that leaves no
process behind; the caller's process group and resource limits, none of the host's descriptors; and ``Popen`` itself
where fork cannot give the process asked for.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support.deputy_process import _wait_http, write_config
from tests.support.forked_deputy import _HOST, ForkedDeputy, run_deputy, start_deputy
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


def _serve_env(tmp_path: Path, port: int) -> dict[str, str]:
    config = tmp_path / "deputy.toml"
    write_config(config, port, "http://127.0.0.1:9/mcp")
    return {**os.environ, "DEPUTY_CONFIG": str(config), "DEPUTY_DATA_DIR": str(tmp_path / "data"),
            "DEPUTY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'deputy.db'}"}


@contextmanager
def _serving(tmp_path: Path) -> Iterator[ForkedDeputy]:
    port = free_port()
    with (tmp_path / "deputy.log").open("wb") as log:
        serving = start_deputy(["serve"], _serve_env(tmp_path, port), log, subprocess.STDOUT)
        assert isinstance(serving, ForkedDeputy)
        try:
            _wait_http(f"http://127.0.0.1:{port}/healthz", serving, "forked deputy serve")
            yield serving
        finally:
            serving.kill()
            serving.wait(10)


def _stat_fields(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()  # state, ppid, pgrp, session, ...


def _links(pid: int) -> set[str]:
    links = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            links.add(os.readlink(fd))
        except OSError:  # closed meanwhile
            continue
    return links


def test_the_child_is_in_the_callers_process_group_with_its_limits_and_none_of_the_hosts_descriptors(
        tmp_path: Path) -> None:
    """Where ``Popen`` puts its child: a signal to the test's process group reaches Deputy, as it did."""
    soft, hard = resource.getrlimit(resource.RLIMIT_CORE)
    lowered = 0 if soft != 0 else min(hard, 4096) if hard != resource.RLIM_INFINITY else 4096
    _HOST.path()  # started before the limit changes: the child must take the caller's current one
    resource.setrlimit(resource.RLIMIT_CORE, (lowered, hard))
    try:
        with _serving(tmp_path) as serving:
            assert _stat_fields(serving.pid)[2:4] == [str(os.getpgrp()), str(os.getsid(0))]
            assert resource.prlimit(serving.pid, resource.RLIMIT_CORE) == (lowered, hard)
            host_own = {link for link in _links(_HOST.pid()) if not link.startswith(("anon_inode:", "/dev/"))}
            host_own -= {os.readlink(f"/proc/{_HOST.pid()}/fd/2")}  # the test's standard error, which it shares
            assert not _links(serving.pid) & host_own
    finally:
        resource.setrlimit(resource.RLIMIT_CORE, (soft, hard))


def _dead(pid: int) -> bool:
    """A zombie whose threads have all ended (a killed leader is a zombie before they have), or reaped."""
    try:
        return _stat_fields(pid)[0] == "Z" and len(list(Path(f"/proc/{pid}/task").iterdir())) == 1
    except (FileNotFoundError, ProcessLookupError):  # reaped before, or while, its /proc entry was read
        return True


def test_poll_reports_a_dead_process_at_once(tmp_path: Path) -> None:
    """As ``Popen.poll``: not None once the process is dead, though the host has not reaped it yet."""
    with _serving(tmp_path) as serving:
        os.kill(serving.pid, signal.SIGKILL)
        while not _dead(serving.pid):
            pass
        assert serving.poll() == -signal.SIGKILL


def _nothing() -> None:
    pass


def test_what_fork_cannot_give_gets_a_process_of_its_own() -> None:
    """A ``preexec_fn``, or an interpreter variable other than the host's: ``Popen``, with the command's result."""
    forked = start_deputy(["--help"], {**os.environ, "DEPUTY_LOG_LEVEL": "debug"}, subprocess.DEVNULL,
                          subprocess.DEVNULL)
    assert isinstance(forked, ForkedDeputy) and forked.wait(60) == 0
    for env, preexec_fn in (({**os.environ, "PYTHONWARNINGS": "default"}, None), (dict(os.environ), _nothing)):
        started = start_deputy(["--help"], env, subprocess.DEVNULL, subprocess.DEVNULL, preexec_fn=preexec_fn)
        assert isinstance(started, subprocess.Popen) and started.wait(60) == 0
