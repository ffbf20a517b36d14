"""The official suite's client authorization scenarios, with Deputy's upstream OAuth client as the client under test.

Issue 15, item 6: ``conformance client`` (0.2.0-alpha.12) runs every ``auth/*`` client scenario once, into one
output directory, in two waves of parallel runs (:func:`waves`): the ``auth``, ``backcompat`` and ``extensions``
suites in one invocation each, and each 2026-07-28 ``auth/*`` scenario with ``--scenario`` (the ``draft`` suite
holding them also holds scenarios that are not about authorization). The client under test is
:mod:`tests.conformance.upstream_auth_adapter`, which puts Deputy between a signed-in user and the scenario's mock
server; the command the suite runs is its launcher, each run a child forked from one process that imported the
adapter once (:mod:`tests.conformance.adapter_host`: thirty starts at four seconds of imports each were most of
this test's time). Each scenario's ``checks.json`` decides, as the suite's own verdict
and baseline do: it passes when no check is FAILURE or WARNING and at least one is SUCCESS.

``upstream-auth-expected-failures.yml`` (the suite's ``--expected-failures`` format) lists the scenarios that
cannot apply, each with its reason in the comment above it. Every other scenario must pass, and every listed one
must still fail: an entry that starts passing is stale and must be removed, so the list cannot rot.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conformance.harness import REPO_ROOT, ScenarioResult, _node_env, require_conformance
from tests.conformance.upstream_auth_adapter import connect_url_in
from tests.support.deputy_process import RunningDeputy

pytestmark = pytest.mark.conformance

EXPECTED_FAILURES = Path(__file__).with_name("upstream-auth-expected-failures.yml")
LAUNCHER = Path(__file__).with_name("adapter_launcher.py")
# Per scenario: Python, Deputy's start (migrations, a password hash) and three OAuth flows, with every scenario's
# process on the same few CPUs at once. A hang still ends: the suite kills the client at this bound.
SCENARIO_TIMEOUT_MS = 180_000
RUN_TIMEOUT = 600.0
_TIMESTAMP = re.compile(r"-\d{4}-\d{2}-\d{2}T[\d-]+Z$")
_ENTRY = re.compile(r"^  - (auth/[a-z0-9-]+)$")
DRAFT_ONLY = "2026-07-28"  # the version list of a scenario that only the draft suite runs


def expected_failures(path: Path = EXPECTED_FAILURES) -> dict[str, str]:
    """``{scenario: reason}`` from the file: ``client:`` then ``  - auth/NAME`` entries, each with its reason in
    the ``#`` comment lines right above it. Anything else in the file is refused (the suite must read it alike)."""
    entries: dict[str, str] = {}
    reason: list[str] = []
    in_client = False
    for number, line in enumerate(path.read_text().splitlines(), 1):
        stripped = line.strip()
        if not stripped:
            reason = []
        elif stripped.startswith("#"):
            reason.append(stripped.lstrip("#").strip())
        elif line == "client:":
            in_client, reason = True, []
        elif in_client and (match := _ENTRY.match(line)):
            assert reason, f"{path.name}:{number}: {match[1]} has no reason in a comment above it"
            assert match[1] not in entries, f"{path.name}:{number}: {match[1]} is listed twice"
            entries[match[1]], reason = " ".join(reason), []
        else:
            raise AssertionError(f"{path.name}:{number}: not an entry of the expected-failures format: {line!r}")
    return entries


def listed_client_auth_scenarios(command: list[str]) -> dict[str, str]:
    """Every ``auth/*`` client scenario of the installed suite: ``{name: its spec versions}``, as
    ``conformance list --client`` prints them (``- auth/NAME [2025-11-25,2026-07-28]``)."""
    listed = subprocess.run([*command, "list", "--client"], env=_node_env(), capture_output=True, text=True,
                            timeout=60, check=True).stdout
    return dict(re.findall(r"^\s+- (auth/[a-z0-9-]+) \[([^]]*)\]", listed, flags=re.MULTILINE))


def waves(scenarios: dict[str, str]) -> list[list[list[str]]]:
    """The invocations, in two waves of about 16 scenarios each: one per suite holding only auth scenarios
    (``auth``, ``backcompat``, ``extensions``; each runs its scenarios in parallel) and one per scenario found only
    in the ``draft`` suite (the 2026-07-28 ones, which it holds among others that are not about authorization).
    Everything is CPU-bound, so waves cost little wall time and halve the processes (each Deputy with the SDK, about
    200 MB) alive at once. A scenario run twice or never fails the test."""
    draft = [["--scenario", name] for name, versions in scenarios.items() if versions == DRAFT_ONLY]
    return [[["--suite", "auth"], ["--suite", "backcompat"]], [["--suite", "extensions"], *draft]]


def adapter_command(host_socket: Path) -> str:
    """What the suite runs per scenario (through a shell, to which it appends the server's URL). At its timeout
    the suite kills that shell: exec makes the kill reach the launcher, whose closed connection kills the adapter."""
    return f"exec {sys.executable} {LAUNCHER} {host_socket}"


@pytest.fixture(scope="module")
def adapter_host() -> Iterator[Path]:
    """The forking host of :mod:`tests.conformance.adapter_host` on a fresh socket; its socket's path."""
    with tempfile.TemporaryDirectory(prefix="deputy-adapter-host-") as directory:
        socket_path = Path(directory) / "host.sock"
        host = subprocess.Popen([sys.executable, "-m", "tests.conformance.adapter_host", str(socket_path)],
                                cwd=REPO_ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        try:
            # "ready" once imported and listening; a host that fails to import exits, and this reads nothing.
            assert host.stdout.readline() == "ready\n", f"the adapter host exited with {host.wait()}"  # type: ignore[union-attr]
            yield socket_path
        finally:
            host.stdin.close()  # type: ignore[union-attr]
            try:
                host.wait(10)
            except subprocess.TimeoutExpired:
                host.kill()
                host.wait()


def run_client_scenarios(command: list[str], wave: list[list[str]], out_dir: Path, host_socket: Path) -> str:
    """The invocations of one wave at once, into ``out_dir``; their consoles, joined."""
    def client_run(selection: list[str]) -> str:
        started = time.monotonic()
        result = subprocess.run(
            [*command, "client", "--command", adapter_command(host_socket), *selection,
             "--timeout", str(SCENARIO_TIMEOUT_MS),
             "--expected-failures", str(EXPECTED_FAILURES), "-o", str(out_dir)],
            cwd=REPO_ROOT, env=_node_env(), capture_output=True, text=True, timeout=RUN_TIMEOUT, check=False)
        return (f"$ conformance client {' '.join(selection)} (exit {result.returncode}, "
                f"{time.monotonic() - started:.0f} s)\n{result.stdout}")

    with concurrent.futures.ThreadPoolExecutor(len(wave)) as pool:
        return "\n".join(pool.map(client_run, wave))


def load_client_results(out_dir: Path) -> dict[str, ScenarioResult]:
    """``{auth/NAME: result}`` from ``<out_dir>/auth/<NAME>-<timestamp>/checks.json``."""
    results: dict[str, ScenarioResult] = {}
    for checks_file in sorted(out_dir.glob("auth/*/checks.json")):
        name = "auth/" + _TIMESTAMP.sub("", checks_file.parent.name)
        assert name not in results, f"{name} ran twice"
        results[name] = ScenarioResult(name, json.loads(checks_file.read_text()))
    return results


def passed(result: ScenarioResult) -> bool:
    """The suite's verdict: no FAILURE, no WARNING, and something succeeded."""
    return result.count("FAILURE") == 0 and result.count("WARNING") == 0 and result.count("SUCCESS") > 0


def _why(result: ScenarioResult, out_dir: Path) -> str:
    problems = [f"{check.get('status')} {check.get('id')}: {check.get('errorMessage') or check.get('description')}"
                for check in result.checks if check.get("status") in ("FAILURE", "WARNING")]
    stderr = [path for path in out_dir.glob("auth/*/stderr.txt")
              if "auth/" + _TIMESTAMP.sub("", path.parent.name) == result.scenario]
    tail = stderr[0].read_text()[-1500:] if stderr else "(no stderr.txt)"
    return "\n    ".join([result.scenario, *problems, "adapter stderr: " + tail.replace("\n", "\n      ")])


@pytest.mark.parametrize(("text", "problem"), [
    ("client:\n  - auth/dpop\n", "has no reason"),
    ("client:\n  # why\n  - auth/dpop\n  # why again\n  - auth/dpop\n", "listed twice"),
    ("client:\n  # why\n  - auth/dpop: not-a-check\n", "not an entry"),
    ("server:\n  # why\n  - auth/dpop\n", "not an entry"),
    ("client:\n  # why\n\n  - auth/dpop\n", "has no reason"),  # a reason belongs to the entry right below it
])
def test_expected_failures_parser_refuses_what_it_cannot_vouch_for(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "expected.yml"
    path.write_text(text)
    with pytest.raises(AssertionError, match=problem):
        expected_failures(path)


def test_expected_failures_file_is_well_formed() -> None:
    listed = expected_failures()
    assert "auth/dpop" in listed and "auth/basic-cimd" in listed
    assert not any(name.startswith(("auth/metadata-", "auth/iss-", "auth/scope-")) for name in listed), (
        "discovery, RFC 9207 and scope scenarios are the authorization code flow Deputy does: never excused")
    assert all(len(reason) >= 40 for reason in listed.values()), "each reason says why, not just a word"


def test_client_auth_scenarios_through_deputy(tmp_path: Path, adapter_host: Path) -> None:
    command = require_conformance("alpha")
    expected = expected_failures()
    scenarios = listed_client_auth_scenarios(command)
    assert len(scenarios) >= 30, f"the installed suite lists its auth scenarios: {sorted(scenarios)}"
    assert set(expected) <= set(scenarios), f"listed but not in the suite: {sorted(set(expected) - set(scenarios))}"

    started = time.monotonic()
    console = "\n".join(run_client_scenarios(command, wave, tmp_path, adapter_host) for wave in waves(scenarios))
    elapsed = time.monotonic() - started
    (tmp_path / "console.log").write_text(console)
    results = load_client_results(tmp_path)

    assert set(results) == set(scenarios), (
        f"never ran: {sorted(set(scenarios) - set(results))}; not listed: {sorted(set(results) - set(scenarios))}\n"
        + console[-3000:])
    applicable = [name for name in scenarios if name not in expected]
    failing = [_why(results[name], tmp_path) for name in applicable if not passed(results[name])]
    stale = [name for name in expected if passed(results[name])]
    passing = len(applicable) - len(failing)
    print(f"\nconformance client auth scenarios through Deputy: {passing}/{len(applicable)} applicable passed, "
          f"{len(expected)} not applicable (still failing: {len(expected) - len(stale)}), "
          f"{len(scenarios)} run in {elapsed:.0f} s")
    assert not stale, f"listed as not applicable but now passing; remove from {EXPECTED_FAILURES.name}: {stale}"
    assert not failing, "applicable scenarios that fail through Deputy:\n  " + "\n  ".join(failing)


def test_adapter_follows_only_deputys_own_connect_url() -> None:
    deputy = RunningDeputy("http://127.0.0.1:8123", Path("data"), Path("deputy.toml"), "sqlite://", "http://u/mcp", {})
    ours = "http://127.0.0.1:8123/connect/conf"
    # An upstream's words relayed in an error (a link elsewhere, Deputy's host on another port, another path of
    # Deputy's) are never where her browser goes.
    assert connect_url_in({"message": "see http://evil.example/connect/conf",
                           "data": {"url": "http://127.0.0.1:8124/connect/conf", "next": "http://127.0.0.1:8123/x",
                                    "login": "https://127.0.0.1:8123/connect/conf"}}, deputy) is None
    assert connect_url_in({"code": -32042, "data": {"connect_url": ours}}, deputy) == ours
    assert connect_url_in({"data": {"elicitations": [{"mode": "url", "url": ours}]}}, deputy) == ours


def _children(pid: int | str) -> set[int]:
    return {int(child) for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()}


def _host_children(host_socket: Path) -> set[int]:
    """The pids of the adapter host's children (the host: this process's child started for ``host_socket``; its
    forked children show the same command line)."""
    [host] = [pid for pid in _children("self")
              if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[-3:-1]
              == [b"tests.conformance.adapter_host", str(host_socket).encode()]]
    return _children(host)


def test_the_launcher_hands_over_its_streams_arguments_and_exit_status(adapter_host: Path, tmp_path: Path) -> None:
    """What the suite sees of a forked adapter is what it saw of ``python -m``: its output on the launcher's own
    streams, the adapter's exit status; the adapter reads the argument the suite appended."""
    usage = subprocess.run(adapter_command(adapter_host), shell=True, capture_output=True, text=True, timeout=60,
                           check=False)
    assert usage.returncode == 1 and "usage: upstream_auth_adapter SERVER_URL" in usage.stderr, usage
    with socket.socket() as silent:  # accepts, never answers: the adapter's Deputy waits on it
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/mcp"
        launcher = subprocess.Popen(f"{adapter_command(adapter_host)} {url}", shell=True, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, env={**os.environ, "MCP_CONFORMANCE_SCENARIO": "x"})
        deadline = time.monotonic() + 60
        while not (children := _host_children(adapter_host)):
            assert launcher.poll() is None and time.monotonic() < deadline, "no adapter was forked"
            time.sleep(0.05)
        launcher.terminate()  # the suite's kill at its timeout
        launcher.wait(10)
        while children & _host_children(adapter_host):  # its adapter ends with it
            assert time.monotonic() < deadline, "the adapter outlived its launcher"
            time.sleep(0.05)
