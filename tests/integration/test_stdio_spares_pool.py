"""A stdio upstream's spares and session ids, in process over real child processes (``pid_stdio_server.py``).

What the end-to-end tests (tests/e2e/test_stdio_spares.py) cannot pin down without waiting: that no spare is
started when the sessions leave no room, that a command that cannot start is logged once however often it is
retried, the back-off's values, and the worker prefix of every session id.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest

from deputy.config import UpstreamServer
from deputy.gateway import stdio_spares
from deputy.gateway.principal import Principal
from deputy.gateway.sessions import SessionBinder
from deputy.gateway.stdio_spares import backoff
from deputy.gateway.stdio_upstream import StdioUpstream
from deputy.limits import LimitSettings
from deputy.worker_identity import WorkerIdentity, owner_of, set_current
from tests.support.eventually import eventually

PID_SERVER = str(Path(__file__).parents[1] / "e2e" / "pid_stdio_server.py")
ALICE = Principal(user="alice", agent="client", scopes=frozenset(), token_id="t", server="warm")


def _server(tmp_path: Path, spares: int = 1, command: tuple[str, ...] | None = None) -> UpstreamServer:
    return UpstreamServer(name="warm", resource="https://deputy.example/mcp/warm", title="warm", scopes=(),
                          required_scopes=(), spare_processes=spares,
                          command=command or (sys.executable, PID_SERVER, "--starts", str(tmp_path / "starts")))


@pytest.fixture
async def upstreams() -> AsyncIterator[list[StdioUpstream]]:
    made: list[StdioUpstream] = []
    yield made
    for upstream in made:
        await upstream.close()


async def _settled(upstream: StdioUpstream, count: int) -> None:
    async def check() -> None:
        assert len(upstream.spares) == count, f"{len(upstream.spares)} spares, waiting for {count}"
    await eventually(check)


async def test_every_session_id_starts_with_the_worker_prefix(tmp_path: Path,
                                                              upstreams: list[StdioUpstream]) -> None:
    """With ``serve --workers N`` the worker's index travels in the id, and reads back from the id the client
    sees (after the HMAC tag is added): whether the session was a spare or started for it."""
    upstream = StdioUpstream(_server(tmp_path))
    upstreams.append(upstream)
    binder = SessionBinder(b"k" * 32)
    set_current(WorkerIdentity(index=2, count=3, run_dir=tmp_path))
    try:
        cold = await upstream._start_session(ALICE)  # no spare yet: started for the session
        upstream.start()
        await _settled(upstream, 1)
        warm = await upstream._start_session(ALICE)
        for session in (cold, warm):
            assert session.session_id.startswith("w2-")
            assert owner_of(binder.outward(ALICE, session.session_id)) == 2
    finally:
        set_current(None)
    single = await upstream._start_session(ALICE)
    assert len(single.session_id) == 32, "one worker: the random part alone (24 bytes, base64url)"


async def test_a_spare_is_handed_out_once_then_replaced(tmp_path: Path, upstreams: list[StdioUpstream]) -> None:
    upstream = StdioUpstream(_server(tmp_path))
    upstreams.append(upstream)
    upstream.start()
    await _settled(upstream, 1)
    spare = upstream.spares.spares[0].process.pid
    first = await upstream._start_session(ALICE)
    assert first.process.pid == spare
    await _settled(upstream, 1)
    second = await upstream._start_session(ALICE)
    assert second.process.pid not in (spare, None)

    async def started() -> None:  # each process writes its pid once it runs, in whatever order they get there
        starts = (tmp_path / "starts").read_text().split() if (tmp_path / "starts").exists() else []
        assert {str(spare), str(second.process.pid)} <= set(starts), starts
    await eventually(started)


async def test_a_session_before_the_spares_start_starts_no_spare(tmp_path: Path,
                                                                  upstreams: list[StdioUpstream]) -> None:
    """The first session's process starts alone (spares start once its first request is answered): two slow
    starts at once would delay its first answer."""
    upstream = StdioUpstream(_server(tmp_path))
    upstreams.append(upstream)
    await upstream._start_session(ALICE)
    assert upstream.spares._keeper is None and len(upstream.spares) == 0
    upstream.start()
    await _settled(upstream, 1)


async def test_no_spare_is_started_where_the_sessions_leave_no_room(tmp_path: Path,
                                                                    upstreams: list[StdioUpstream]) -> None:
    upstream = StdioUpstream(_server(tmp_path, spares=2),
                             replace(LimitSettings(), stdio_sessions_per_server=1, stdio_sessions_per_user=1))
    upstreams.append(upstream)
    await upstream._start_session(ALICE)
    assert await upstream.spares._start_one() is False, "the one place is the session's"
    assert len(upstream.spares) == 0


async def test_a_command_that_cannot_start_is_retried_with_back_off_and_logged_once(
        tmp_path: Path, upstreams: list[StdioUpstream], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(stdio_spares, "FIRST_BACKOFF", 0.001)  # many retries, quickly: the log is what is counted
    upstream = StdioUpstream(_server(tmp_path, command=(str(tmp_path / "gone"),)))
    upstreams.append(upstream)
    caplog.set_level(logging.INFO, logger=stdio_spares.__name__)
    upstream.start()

    async def retried() -> None:
        assert upstream.spares.failures >= 6
    await eventually(retried)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, warnings
    assert f"could not be started (command not found: {tmp_path / 'gone'})" in warnings[0]


def test_back_off_doubles_from_half_a_second_up_to_a_minute() -> None:
    assert [backoff(n) for n in range(0, 10)] == [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    assert backoff(10_000) == 60.0


class _ExitsAsItIsSignalled:
    """A process whose exit asyncio has not seen yet when the SIGTERM finds it gone (ProcessLookupError)."""

    returncode = None
    stdin = None

    def __init__(self) -> None:
        self.gone = asyncio.Event()

    async def wait(self) -> int:
        await self.gone.wait()
        return 0

    def terminate(self) -> None:
        self.gone.set()
        raise ProcessLookupError

    def kill(self) -> None:
        raise ProcessLookupError


async def test_a_process_that_exits_as_it_is_stopped_is_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    """A DELETE was answered 500 (ProcessLookupError from terminate) when the process ended on its own just after
    the grace period, before asyncio had reaped it."""
    monkeypatch.setattr(stdio_spares, "STOP_GRACE", 0.01)
    process = _ExitsAsItIsSignalled()
    await stdio_spares.stop_process(process)  # type: ignore[arg-type]
    assert process.gone.is_set()
