"""Issue 16 item 4: a stdio server's spare processes, started ahead of the sessions that take them.

Real processes (``pid_stdio_server.py``, which appends its pid to a file as it starts and tells its pid through a
tool) behind a real Deputy, spoken to with the official MCP Python SDK client. Which process serves a session is
read from the process itself, never inferred from timing: a session served by a spare has the pid that was in the
starts file before the session was opened.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import httpx2
import pytest
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client

from tests.support.databases import database_url
from tests.support.deputy_process import RunningDeputy, running_deputy
from tests.support.eventually import eventually
from tests.support.oauth_flow import mcp_post, tokens_for_alice

BOB_PASSWORD = "bob's own long passphrase"
PID_SERVER = str(Path(__file__).with_name("pid_stdio_server.py"))
# server name -> (spare_processes, extra arguments of pid_stdio_server.py)
SERVERS = {"warm": (1, ()), "cold": (0, ()), "full": (3, ()), "crashing": (1, ("--exit-at-start",))}


@pytest.fixture(scope="module", params=["sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@dataclass
class Spares:
    deputy: RunningDeputy
    directory: Path

    def starts(self, server: str) -> list[int]:
        """The pids of every process of ``server`` started so far, in order."""
        path = self.directory / f"{server}.starts"
        return [int(line) for line in path.read_text().split()] if path.exists() else []

    def log(self) -> str:
        return (self.directory / "deputy.log").read_text(errors="replace")


def servers_config(directory: Path, servers: Mapping[str, tuple[int, tuple[str, ...]]]) -> str:
    text = ""
    for name, (spares, extra) in servers.items():
        command = [sys.executable, PID_SERVER, "--starts", str(directory / f"{name}.starts"), *extra]
        text += (f"\n[servers.{name}]\ncommand = {json.dumps(command)}\nscopes = [\"{name}:tools\"]\n"
                 f"spare_processes = {spares}\n")
    return text


@pytest.fixture(scope="module")
def spares(backend: str, upstream_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Spares]:
    """A Deputy with the servers of :data:`SERVERS`, at most three stdio processes per server and two sessions
    per user; users alice and bob."""
    directory = tmp_path_factory.mktemp(f"deputy-stdio-spares-{backend}")
    extra = servers_config(directory, SERVERS) + (
        "\n[limits]\nstdio_sessions_per_server = 3\nstdio_sessions_per_user = 2\n")
    with database_url(backend, directory) as url, running_deputy(directory, url, upstream_url, extra,
                                                                           users=(("bob", BOB_PASSWORD),)) as deputy:
        yield Spares(deputy, directory)


@asynccontextmanager
async def sdk_session(deputy: RunningDeputy, server: str, token: str) -> AsyncIterator[Client]:
    async with (httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30.0) as http,
                Client(streamable_http_client(deputy.resource(server), http_client=http), mode="legacy") as client):
        yield client


async def whoami(client: Client) -> dict[str, object]:
    result = await client.call_tool("whoami", {})
    assert not result.is_error, result
    value = json.loads(result.content[0].text)  # type: ignore[union-attr]
    assert isinstance(value, dict)
    return value


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


async def _spare_of(spares: Spares, server: str, besides: set[int]) -> int:
    """The one live process of ``server`` outside ``besides`` (the sessions' own, or all known so far): its spare.
    Processes of sessions ended earlier are gone, whatever order the tests ran in."""
    async def started() -> int:
        waiting = [pid for pid in spares.starts(server) if pid not in besides and _alive(pid)]
        assert len(waiting) == 1, f"{server}: waiting for exactly one spare, found {waiting}"
        return waiting[0]
    return await eventually(started)


async def test_a_new_session_takes_the_spare_and_a_replacement_starts(spares: Spares) -> None:
    token, _ = await tokens_for_alice(spares.deputy, spares.deputy.resource("warm"))
    async with sdk_session(spares.deputy, "warm", token) as first:
        first_pid = (await whoami(first))["pid"]
        assert isinstance(first_pid, int)
        spare = await _spare_of(spares, "warm", {first_pid})
        # Its stderr is relayed while it waits, like a session's.
        await eventually(lambda: _asserted(f"pid {spare} started" in spares.log(), "spare's stderr not relayed"))
        async with sdk_session(spares.deputy, "warm", token) as second:
            served = await whoami(second)
            assert served["pid"] == spare, "the session is served by the process started before it was opened"
            received = served["received"]
            assert isinstance(received, list) and received[0] == "initialize", \
                "a spare is sent nothing before the session's own initialize"
            await _spare_of(spares, "warm", {first_pid, spare})  # one replacement, not more


async def _asserted(condition: bool, message: str) -> None:
    assert condition, message


async def test_two_sessions_opened_at_once_never_share_a_process(spares: Spares) -> None:
    token, _ = await tokens_for_alice(spares.deputy, spares.deputy.resource("warm"))

    async def pid_of_a_session(ready: asyncio.Event, done: asyncio.Event) -> object:
        async with sdk_session(spares.deputy, "warm", token) as client:
            pid = (await whoami(client))["pid"]
            ready.set()
            await done.wait()  # both sessions open at the same time
            return pid

    readies, done = [asyncio.Event(), asyncio.Event()], asyncio.Event()
    tasks = [asyncio.create_task(pid_of_a_session(ready, done)) for ready in readies]
    await asyncio.wait_for(asyncio.gather(*(ready.wait() for ready in readies)), 60)
    done.set()
    first, second = await asyncio.gather(*tasks)
    assert first != second
    assert {first, second} <= set(spares.starts("warm"))


async def test_without_spares_each_session_starts_its_own_process(spares: Spares) -> None:
    token, _ = await tokens_for_alice(spares.deputy, spares.deputy.resource("cold"))
    for opened in (1, 2):
        before = set(spares.starts("cold"))
        async with sdk_session(spares.deputy, "cold", token) as client:
            pid = (await whoami(client))["pid"]
        assert pid not in before, "started for this session, not before it"
        assert len(spares.starts("cold")) == opened, "spare_processes = 0 starts nothing ahead"


async def test_spares_fill_only_free_places_and_never_refuse_a_session(spares: Spares) -> None:
    """At stdio_sessions_per_server = 3 with spare_processes = 3: one session and two spares fill the cap, and the
    next two sessions are still admitted (each takes a spare); past three sessions 503; a place freed holds a spare
    again, and the session after takes it."""
    alice, _ = await tokens_for_alice(spares.deputy, spares.deputy.resource("full"))
    bob, _ = await tokens_for_alice(spares.deputy, spares.deputy.resource("full"), username="bob",
                                    password=BOB_PASSWORD)

    async def open_session(token: str) -> tuple[int, str]:
        opened = await mcp_post(spares.deputy, token, server="full")
        return opened.status_code, opened.headers.get("mcp-session-id", "")

    async def end(token: str, session: str) -> None:
        async with httpx.AsyncClient(timeout=30) as http:
            ended = await http.delete(spares.deputy.resource("full"), headers={
                "Authorization": f"Bearer {token}", "Mcp-Session-Id": session})
        assert ended.status_code == 200

    first, first_id = await open_session(alice)
    assert first == 200
    await eventually(lambda: _asserted(len(spares.starts("full")) >= 3, "spares not started"))
    assert len(spares.starts("full")) == 3, "one session and two spares: the cap, never more"
    second, second_id = await open_session(alice)
    third, third_id = await open_session(bob)
    assert (second, third) == (200, 200), "a spare never holds a place a session needs"
    assert (await open_session(bob))[0] == 503, "the server's cap (bob holds one of his two)"
    assert len(spares.starts("full")) == 3, "no spare started past the cap"
    # Known before the DELETE: the replacement may start (and write its pid) before the DELETE is answered.
    known = set(spares.starts("full"))
    await end(alice, first_id)
    refilled = await _spare_of(spares, "full", known)
    fourth, fourth_id = await open_session(bob)
    assert fourth == 200
    assert len(spares.starts("full")) == 4, "the session took the spare that refilled the freed place"
    await end(alice, second_id)
    await end(bob, third_id)
    await end(bob, fourth_id)
    assert refilled in spares.starts("full")


async def test_a_crashing_command_is_restarted_with_back_off_and_logged_once(spares: Spares) -> None:
    """Without back-off a command that exits at once would be started again hundreds of times a second."""
    token, _ = await tokens_for_alice(spares.deputy, spares.deputy.resource("crashing"))
    await mcp_post(spares.deputy, token, server="crashing")  # the first request starts the spares
    await eventually(lambda: _asserted(len(spares.starts("crashing")) >= 3, "a dead spare is replaced"))
    counted = len(spares.starts("crashing"))
    await asyncio.sleep(3.0)  # a window, not a measurement: what is counted is starts, not time
    assert len(spares.starts("crashing")) - counted <= 4, spares.starts("crashing")
    warnings = [line for line in spares.log().splitlines() if "stdio server crashing: a spare process" in line]
    assert len(warnings) == 1, warnings
    assert "Traceback" not in spares.log()


async def test_no_spare_outlives_deputy(upstream_url: str, tmp_path: Path) -> None:
    """Its processes linger a minute after their stdin closes (as Deputy's end would close it): only Deputy
    stopping them at shutdown ends them sooner."""
    servers = {"warm": (3, ("--linger", "60"))}
    with database_url("sqlite", tmp_path) as url, \
            running_deputy(tmp_path, url, upstream_url, servers_config(tmp_path, servers)) as deputy:
        watched = Spares(deputy, tmp_path)
        token, _ = await tokens_for_alice(deputy, deputy.resource("warm"))
        async with sdk_session(deputy, "warm", token) as client:
            await whoami(client)
            await eventually(lambda: _asserted(len(watched.starts("warm")) >= 4, "spares not started"))
            started = watched.starts("warm")
            assert all(_alive(pid) for pid in started[-3:])
    assert deputy.process is not None and deputy.process.returncode is not None
    assert deputy.process.returncode in (0, -signal.SIGTERM), "stopped by its SIGTERM, not killed"
    await eventually(lambda: _asserted_none([pid for pid in started if _alive(pid)]), within=10)
    assert os.getpid() not in started


async def _asserted_none(alive: list[int]) -> None:
    assert not alive, f"orphaned processes: {alive}"


async def test_with_two_workers_every_session_id_names_its_worker_and_each_session_keeps_its_process(
        upstream_url: str, tmp_path: Path) -> None:
    """``serve --workers 2``: the id the client gets starts with ``w<index>-`` (the worker whose child the process
    is), and every later request of the session reaches that process, whichever worker accepts the connection."""
    with database_url("sqlite", tmp_path) as url, \
            running_deputy(tmp_path, url, upstream_url, servers_config(tmp_path, {"warm": (1, ())}),
                           environment={"DEPUTY_WORKERS": "2"}) as deputy:
        token, _ = await tokens_for_alice(deputy, deputy.resource("warm"))
        opened: list[str] = []

        async def remember(response: httpx2.Response) -> None:
            if "mcp-session-id" in response.headers:
                opened.append(response.headers["mcp-session-id"])

        for _ in range(4):
            async with (httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30.0,
                                           event_hooks={"response": [remember]}) as http,
                        Client(streamable_http_client(deputy.resource("warm"), http_client=http),
                               mode="legacy") as client):
                pids = {(await whoami(client))["pid"] for _ in range(3)}
                assert len(pids) == 1, "one session, one process, whichever worker took the connection"
        assert opened and all(session[:3] in ("w0-", "w1-") for session in opened), opened
