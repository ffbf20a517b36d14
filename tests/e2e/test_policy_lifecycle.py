"""A server's Cedar policies over the life of a running Deputy: refused at start, reloaded, re-validated.

Real processes throughout: ``python -m deputy serve`` with a written config, the demo upstream
(behind a recorder, so a test can tell whether a call reached it) and an upstream whose tool
list grows while it runs (``tests.support.changing_upstream``). Each test works on its own
copy of the policy directory, so no test sees another's edits.

SQLite only: what is tested here is the policy lifecycle (files, signals, the tool list), which
does not touch the database; the storage backends are covered by every other e2e module.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from tests.support.changing_upstream import changing_upstream
from tests.support.databases import database_url
from tests.support.demo_policies import BROKEN_POLICY, DEMO_POLICIES
from tests.support.deputy_process import PASSWORD, RunningDeputy, _wait_http, running_deputy, write_config
from tests.support.oauth_flow import tokens_for_alice
from tests.support.recording_upstream import RequestRecorder, recording_upstream
from tests.support.sdk_client import free_port

POLICY_DENIED = -32003
WATCH = 0.2  # [gateway] policy_watch_seconds of the watching Deputy
DEADLINE = 10.0  # seconds a change may take to show (a watch tick, a re-read of the tools)

NO_ECHO = '@id("no-echo")\nforbid (principal, action == Deputy::Action::"echo", resource);\n'
# A syntax error on line 2, column 27 (`resource` where `,` belongs).
SYNTAX_ERROR = "// a comma is missing\npermit (principal, action resource);\n"
SYNTAX_ERROR_AT = "2:27"
CHANGING_POLICY = (
    '@id("changing-tools")\npermit (principal, action in [Deputy::Action::"echo", Deputy::Action::"grow"], resource);\n'
)
ALLOW_EXTRA = '@id("allow-extra")\npermit (principal, action == Deputy::Action::"extra", resource);\n'

T = TypeVar("T")


# --- helpers -------------------------------------------------------------------------------------------------


def put(directory: Path, name: str, text: str) -> None:
    """Write a policy file atomically (a watcher never sees it half written)."""
    partial = directory / f".{name}.partial"
    partial.write_text(text)
    partial.replace(directory / name)


def policy_copy(directory: Path, name: str) -> Path:
    """A private copy of the demo policies."""
    copy = directory / name
    shutil.copytree(DEMO_POLICIES, copy)
    return copy


class LogTail:
    """The part of a Deputy log written since the last `mark()`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0

    def mark(self) -> None:
        self.offset = self.path.stat().st_size

    def new(self) -> str:
        with self.path.open("rb") as log:
            log.seek(self.offset)
            return log.read().decode("utf-8", "replace")


async def eventually(
    probe: Callable[[], Awaitable[T]], done: Callable[[T], bool], what: str, within: float = DEADLINE
) -> T:
    """Call `probe` until `done` holds for its result; fail with the last result after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = await probe()
        if done(result):
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {within:g} s; last: {result!r}")
        await asyncio.sleep(0.05)


async def in_log(tail: LogTail, *needles: str) -> str:
    """The new part of the log once it contains every needle."""

    async def read() -> str:
        return tail.new()

    return await eventually(read, lambda text: all(n in text for n in needles), f"log lines with {needles}")


async def post(deputy: RunningDeputy, server: str, token: str, body: dict[str, Any]) -> httpx.Response:
    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "MCP-Protocol-Version": "2025-06-18",
    }
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(deputy.resource(server), content=json.dumps(body), headers=headers)


def messages(response: httpx.Response) -> list[dict[str, Any]]:
    """The JSON-RPC messages of a response, JSON or an SSE stream."""
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        return [json.loads(line[5:]) for line in response.text.splitlines() if line.startswith("data:")]
    return [response.json()]


@dataclass(frozen=True)
class Answer:
    """What a client got for one tools/call."""

    status: int
    messages: list[dict[str, Any]]

    @property
    def reply(self) -> dict[str, Any]:
        """The response to the call (the message with an id)."""
        replies = [m for m in self.messages if "id" in m]
        assert len(replies) == 1, self.messages
        return replies[0]

    @property
    def allowed(self) -> bool:
        return self.status == 200 and "result" in self.reply

    @property
    def denied_by(self) -> list[str] | None:
        """The deciding policies of a policy denial; None when the call was not denied by policy."""
        error = self.reply.get("error")
        if self.status != 200 or not error or error.get("code") != POLICY_DENIED:
            return None
        assert error["message"].startswith("denied by policy"), error
        assert error["data"]["outcome"] == "deny", error
        policies: list[str] = error["data"]["policies"]
        return policies


async def call(deputy: RunningDeputy, server: str, token: str, tool: str, arguments: dict[str, Any]) -> Answer:
    response = await post(
        deputy,
        server,
        token,
        {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": tool, "arguments": arguments}},
    )
    return Answer(response.status_code, messages(response))


def forwarded(recorder: RequestRecorder, tool: str) -> int:
    """How many tools/call requests for `tool` reached the upstream."""
    count = 0
    for request in recorder.seen:
        try:
            message = json.loads(request.body or b"null")
        except ValueError:
            continue
        if (
            isinstance(message, dict)
            and message.get("method") == "tools/call"
            and message.get("params", {}).get("name") == tool
        ):
            count += 1
    return count


async def allowed_and_forwarded(
    deputy: RunningDeputy, recorder: RequestRecorder, token: str, tool: str, arguments: dict[str, Any]
) -> None:
    before = forwarded(recorder, tool)
    answer = await call(deputy, "guarded", token, tool, arguments)
    assert answer.allowed, answer
    assert "isError" not in answer.reply["result"] or not answer.reply["result"]["isError"], answer
    assert forwarded(recorder, tool) == before + 1


async def denied_not_forwarded(
    deputy: RunningDeputy,
    recorder: RequestRecorder,
    token: str,
    tool: str,
    arguments: dict[str, Any],
    policies: list[str],
) -> None:
    before = forwarded(recorder, tool)
    answer = await call(deputy, "guarded", token, tool, arguments)
    assert answer.denied_by == policies, answer
    assert forwarded(recorder, tool) == before


def accepts_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
    except OSError:
        return False
    return True


def deputy_env(directory: Path, config: Path, url: str) -> dict[str, str]:
    return {
        **os.environ,
        "DEPUTY_CONFIG": str(config),
        "DEPUTY_DATA_DIR": str(directory / "data"),
        "DEPUTY_DATABASE_URL": url,
    }


@dataclass(frozen=True)
class Served:
    deputy: RunningDeputy
    process: subprocess.Popen[bytes]
    log: Path


@contextmanager
def serving_deputy(directory: Path, upstream_url: str, extra: str) -> Iterator[Served]:
    """Like `running_deputy` (which does not expose its process), keeping the process to signal it."""
    port = free_port()
    config = directory / "deputy.toml"
    write_config(config, port, upstream_url, extra)
    with database_url("sqlite", directory) as url:
        env = deputy_env(directory, config, url)
        deputy = RunningDeputy(f"http://127.0.0.1:{port}", directory / "data", config, url, upstream_url, env)
        added = deputy.cli("users", "add", "alice", "--password", PASSWORD)
        assert added.returncode == 0, added.stderr
        log_path = directory / "deputy.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "deputy", "serve"], env=env, stdout=log, stderr=subprocess.STDOUT
            )
            try:
                _wait_http(f"{deputy.url}/healthz", process, "deputy serve")
                yield Served(deputy, process, log_path)
            finally:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(10)


# --- 1. an unusable policy set stops start-up ------------------------------------------------------------------


@dataclass(frozen=True)
class Refused:
    returncode: int
    output: str
    port: int
    answered: bool


def start_refused(directory: Path, upstream_url: str, extra: str, timeout: float = 30.0) -> Refused:
    """Run `deputy serve` until it exits (fail if it still runs after `timeout`), probing its port meanwhile."""
    port = free_port()
    config = directory / "deputy.toml"
    write_config(config, port, upstream_url, extra)
    output = directory / "serve.out"
    answered = False
    with output.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "deputy", "serve"],
            env=deputy_env(directory, config, f"sqlite+aiosqlite:///{directory / 'deputy.db'}"),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        try:
            while process.poll() is None:
                if time.monotonic() > deadline:
                    pytest.fail(f"deputy serve still running after {timeout:g} s:\n{output.read_text()}")
                try:
                    httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5)
                    answered = True
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)
    return Refused(process.returncode, output.read_text(), port, answered)


def assert_refused(refused: Refused, location: str) -> None:
    assert refused.returncode != 0, refused.output
    assert location in refused.output, refused.output
    assert not refused.answered, "Deputy answered HTTP although its policies were refused"
    assert not accepts_connections(refused.port)


def test_policies_that_do_not_validate_against_readable_tools_stop_start_up(upstream_url: str, tmp_path: Path) -> None:
    """Credentials `none`: Deputy reads the demo's tools before serving, and `broken.cedar` reads an attribute
    `echo` does not have: the process exits non-zero naming broken.cedar:4:22 and never serves."""
    policies = policy_copy(tmp_path, "policies")
    put(policies, "broken.cedar", BROKEN_POLICY)
    refused = start_refused(
        tmp_path,
        upstream_url,
        f'''
[servers.guarded]
url = "{upstream_url}"
credentials = "none"
scopes = ["guarded:tools"]
policies = "{policies}"
''',
    )
    assert_refused(refused, "broken.cedar:4:22")
    assert "input.volume" in refused.output


def test_a_syntax_error_stops_start_up_even_where_validation_waits(upstream_url: str, tmp_path: Path) -> None:
    """A syntax error is found before any tool is read: even a server whose policies are validated on first
    need (`exchange`: its tools are not readable before serving) stops start-up, with the file:line:col."""
    policies = policy_copy(tmp_path, "policies")
    put(policies, "typo.cedar", SYNTAX_ERROR)
    refused = start_refused(
        tmp_path,
        upstream_url,
        f'''
[servers.guarded]
url = "{upstream_url}"
credentials = "exchange"
scopes = ["guarded:tools"]
policies = "{policies}"
''',
    )
    assert_refused(refused, f"typo.cedar:{SYNTAX_ERROR_AT}")


# --- 2. and 4. a Deputy that watches its policy directories ------------------------------------------------------


@dataclass(frozen=True)
class Watching:
    deputy: RunningDeputy
    recorder: RequestRecorder
    guarded: Path  # policy directory of `guarded` (the demo, behind the recorder)
    changing: Path  # policy directory of `changing` (the upstream whose tools grow)
    log: LogTail


@pytest.fixture(scope="module")
def recorder_upstream() -> Iterator[tuple[str, RequestRecorder]]:
    with recording_upstream() as upstream:
        yield upstream


@pytest.fixture(scope="module")
def watching(
    recorder_upstream: tuple[str, RequestRecorder], upstream_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Watching]:
    directory = tmp_path_factory.mktemp("deputy-policy-watch")
    recorded_url, recorder = recorder_upstream
    guarded = policy_copy(directory, "guarded-policies")
    changing = directory / "changing-policies"
    changing.mkdir()
    put(changing, "tools.cedar", CHANGING_POLICY)
    with changing_upstream() as changing_url:
        extra = f'''
[gateway]
policy_watch_seconds = {WATCH}

[servers.guarded]
url = "{recorded_url}"
scopes = ["demo:tools", "demo:admin"]
policies = "{guarded}"

[servers.changing]
url = "{changing_url}"
scopes = ["changing:tools"]
policies = "{changing}"
'''
        with database_url("sqlite", directory) as url, running_deputy(directory, url, upstream_url, extra) as deputy:
            yield Watching(deputy, recorder, guarded, changing, LogTail(directory / "deputy.log"))


async def test_policy_files_changed_on_disk_are_reloaded_unless_broken(watching: Watching) -> None:
    deputy, recorder, policies, log = watching.deputy, watching.recorder, watching.guarded, watching.log
    token, _ = await tokens_for_alice(deputy, deputy.resource("guarded"))
    echo = {"text": "hello"}
    await allowed_and_forwarded(deputy, recorder, token, "echo", echo)
    try:
        # A new file: applied within a few watch ticks.
        log.mark()
        put(policies, "no-echo.cedar", NO_ECHO)
        await eventually(
            lambda: call(deputy, "guarded", token, "echo", echo),
            lambda answer: answer.denied_by == ["no-echo"],
            "echo denied by no-echo",
        )
        await denied_not_forwarded(deputy, recorder, token, "echo", echo, ["no-echo"])
        await in_log(log, "policy files of guarded changed on disk", "policies reloaded")

        # A broken file: the reload is refused, loudly, and the previous set (with no-echo) stays active.
        log.mark()
        put(policies, "typo.cedar", SYNTAX_ERROR)
        refusal = await in_log(log, "policy reload REFUSED", f"typo.cedar:{SYNTAX_ERROR_AT}")
        assert "policies reloaded" not in refusal, refusal
        await denied_not_forwarded(deputy, recorder, token, "echo", echo, ["no-echo"])
        await allowed_and_forwarded(deputy, recorder, token, "add", {"a": 2, "b": 3})
    finally:
        (policies / "no-echo.cedar").unlink(missing_ok=True)
        (policies / "typo.cedar").unlink(missing_ok=True)
    # Both gone: the demo policies alone again.
    await eventually(
        lambda: call(deputy, "guarded", token, "echo", echo), lambda answer: answer.allowed, "echo allowed again"
    )
    await allowed_and_forwarded(deputy, recorder, token, "echo", echo)


async def test_a_tool_list_change_revalidates_the_policies(watching: Watching) -> None:
    """`grow` adds a tool `extra` and says so (notifications/tools/list_changed on the call's stream). A policy
    naming `extra` is refused while `extra` does not exist; the list change makes Deputy re-read the tools,
    and the same files now validate and apply: `extra` is allowed and reaches the upstream."""
    deputy, policies, log = watching.deputy, watching.changing, watching.log
    token, _ = await tokens_for_alice(deputy, deputy.resource("changing"))
    echoed = await call(deputy, "changing", token, "echo", {"text": "hi"})
    assert echoed.allowed and echoed.reply["result"]["structuredContent"] == {"result": "hi"}, echoed
    unknown = await call(deputy, "changing", token, "extra", {"n": 4})
    assert unknown.denied_by == [], unknown  # no such action: denied, no policy decided it
    try:
        log.mark()
        put(policies, "extra.cedar", ALLOW_EXTRA)
        refusal = await in_log(log, "policy reload REFUSED", "extra.cedar:")
        assert "policies reloaded" not in refusal, refusal
        assert (await call(deputy, "changing", token, "extra", {"n": 4})).denied_by == []

        log.mark()
        grown = await call(deputy, "changing", token, "grow", {})
        assert grown.allowed, grown
        assert grown.reply["result"]["structuredContent"] == {"result": "grown"}, grown
        # The notification travelled through Deputy to the client, before the result.
        assert [m.get("method") for m in grown.messages if "id" not in m] == ["notifications/tools/list_changed"]
        changed = await in_log(log, "tools of changing changed: schema")
        assert re.search(r'"tools of changing changed: schema [0-9a-f]{12} active"', changed), changed  # a log line
        extra = await eventually(
            lambda: call(deputy, "changing", token, "extra", {"n": 4}), lambda answer: answer.allowed, "extra allowed"
        )
        assert extra.reply["result"]["structuredContent"] == {"result": 8}, extra  # the upstream's answer
        assert (await call(deputy, "changing", token, "echo", {"text": "still"})).allowed
    finally:
        (policies / "extra.cedar").unlink(missing_ok=True)


# --- 3. SIGHUP alone ---------------------------------------------------------------------------------------------


async def test_without_watching_only_sighup_reloads(
    recorder_upstream: tuple[str, RequestRecorder], upstream_url: str, tmp_path: Path
) -> None:
    recorded_url, recorder = recorder_upstream
    policies = policy_copy(tmp_path, "policies")
    extra = f'''
[gateway]
policy_watch_seconds = 0

[servers.guarded]
url = "{recorded_url}"
scopes = ["demo:tools", "demo:admin"]
policies = "{policies}"
'''
    with serving_deputy(tmp_path, upstream_url, extra) as served:
        deputy, log = served.deputy, LogTail(served.log)
        token, _ = await tokens_for_alice(deputy, deputy.resource("guarded"))
        echo = {"text": "hello"}
        await allowed_and_forwarded(deputy, recorder, token, "echo", echo)

        log.mark()
        put(policies, "no-echo.cedar", NO_ECHO)
        for _ in range(6):  # ~1 s, five times the shortest watch interval: nothing watches
            await allowed_and_forwarded(deputy, recorder, token, "echo", echo)
            await asyncio.sleep(0.2)
        assert "reload" not in log.new(), log.new()

        served.process.send_signal(signal.SIGHUP)
        await eventually(
            lambda: call(deputy, "guarded", token, "echo", echo),
            lambda answer: answer.denied_by == ["no-echo"],
            "echo denied after SIGHUP",
        )
        await denied_not_forwarded(deputy, recorder, token, "echo", echo, ["no-echo"])
        await in_log(log, "reloading policies and tools of guarded", "policies reloaded")

        (policies / "no-echo.cedar").unlink()
        served.process.send_signal(signal.SIGHUP)
        await eventually(
            lambda: call(deputy, "guarded", token, "echo", echo),
            lambda answer: answer.allowed,
            "echo allowed after the second SIGHUP",
        )
        assert served.process.poll() is None, "SIGHUP ended Deputy"
