"""The fault-injection harness: a killable Deputy in front of a recording, probing upstream, and load on it.

`faulty_deputy` starts ``deputy serve`` (a `KillableDeputy`, audit on, the demo Cedar policies on server
``guarded``) in front of the recording demo upstream, with an `AuditProbe` that asks the database, as each
``tools/call`` arrives upstream, whether its ``decision`` is already committed. `Load` runs clients that
call ``echo`` with a unique text each, so every call the upstream sees can be matched to its record, and
sorts each answer into: answered, refused (HTTP 503 with a JSON-RPC error: fail closed), unexpected.

`deputy_tcp_peers` lists a process's TCP connections from ``/proc`` (no psutil here): which of PostgreSQL's
backends serve Deputy, and whether Deputy still holds a connection to an upstream that died.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.e2e.test_audit_gateway import AUDIT_CONFIG, call, forwarded_calls, servers
from tests.support.audit_log import (
    AuditProbe,
    KillableDeputy,
    LogSnapshot,
    killable_deputy,
    log_verifier,
    read_log,
    verify_log,
)
from tests.support.databases import database_url
from tests.support.deputy_process import RunningDeputy
from tests.support.oauth_flow import tokens_for_alice
from tests.support.recording_upstream import RequestRecorder, recording_upstream

SERVER = "guarded"
TOKEN_REFRESH_AFTER = 300.0  # access tokens live 600 s; a long run under load takes a fresh one well before
QUIET = 1.0  # seconds without a new record before the log is verified (_checkpointed_log)


@dataclass
class FaultyDeputy:
    killable: KillableDeputy
    recorder: RequestRecorder
    probe: AuditProbe
    _token: str = ""
    _token_at: float = 0.0

    @property
    def deputy(self) -> RunningDeputy:
        return self.killable.deputy

    @property
    def pid(self) -> int:
        assert self.killable.process is not None
        return self.killable.process.pid

    def alive(self) -> bool:
        return self.killable.process is not None and self.killable.process.poll() is None

    async def token(self) -> str:
        if not self._token or time.monotonic() - self._token_at > TOKEN_REFRESH_AFTER:
            self._token, _ = await tokens_for_alice(self.deputy, self.deputy.resource(SERVER))
            self._token_at = time.monotonic()
        return self._token

    def forwarded(self, prefix: str) -> list[str]:
        """The texts of the ``echo`` calls starting with ``prefix`` that reached the upstream, in order."""
        return [args["text"] for tool, args in forwarded_calls(self.recorder)
                if tool == "echo" and isinstance(args, dict) and str(args.get("text", "")).startswith(prefix)]

    async def check_log(self, prefix: str) -> list[str]:
        """Verify the whole log (recomputed by the tests' own code, and by ``deputy audit verify``); return the
        texts forwarded upstream under ``prefix`` that lack an allowing ``decision`` there, or whose decision was
        not yet committed when the call arrived upstream (both must be empty)."""
        snapshot = await self._checkpointed_log()
        verify_log(snapshot, log_verifier(self.deputy.data_dir))
        verified = await asyncio.to_thread(self.deputy.cli, "audit", "verify")
        assert verified.returncode == 0, f"deputy audit verify failed:\n{verified.stdout}\n{verified.stderr}"
        allowed = {str(leaf.record["arguments"].get("text")) for leaf in
                   snapshot.decisions(tool="echo", outcome="allow", server=SERVER)
                   if isinstance(leaf.record.get("arguments"), dict)}
        late = {str(c.arguments.get("text")) for c in self.probe.calls
                if isinstance(c.arguments, dict) and not c.recorded}
        return [text for text in self.forwarded(prefix) if text not in allowed or text in late]

    async def _checkpointed_log(self, within: float = 30.0) -> LogSnapshot:
        """The log once its newest signed checkpoint covers every record and no record has been added for
        :data:`QUIET` seconds. The last calls' outcomes are appended in the background (lingering up to 20 ms for a
        commit to share), after their answers, and checkpointed up to ``checkpoint_interval_ms`` later; `deputy
        audit verify` allows no unsigned record, so a snapshot taken between the two (one CI run) or a record
        appended after it (another) would fail it. A Deputy that never catches up is left to fail that
        verification."""
        deadline = time.monotonic() + within
        settled: tuple[int, float] | None = None  # a fully signed size, and since when it has not changed
        while True:
            snapshot = await read_log(self.deputy.database_url)
            signed = max((checkpoint.size for checkpoint in snapshot.checkpoints), default=0)
            now = time.monotonic()
            if signed >= len(snapshot.leaves):
                if settled is None or settled[0] != len(snapshot.leaves):
                    settled = (len(snapshot.leaves), now)
                elif now - settled[1] >= QUIET:
                    return snapshot
            else:
                settled = None
            if now > deadline:
                return snapshot
            await asyncio.sleep(0.05)

    def log_text(self) -> str:
        return self.killable.log_path.read_text(encoding="utf-8", errors="replace")


@contextmanager
def faulty_deputy(backend: str, directory: Path, extra_config: str = "") -> Iterator[FaultyDeputy]:
    with recording_upstream() as (recorded_url, recorder), database_url(backend, directory) as db_url:
        probe = AuditProbe(recorder.app, db_url)
        recorder.app = probe
        config = servers(recorded_url) + AUDIT_CONFIG + extra_config
        with killable_deputy(directory, db_url, recorded_url, config) as killable:
            yield FaultyDeputy(killable, recorder, probe)


def marker(what: str) -> str:
    return f"{what} {uuid.uuid4().hex[:12]}"


@dataclass
class Load:
    """``clients`` concurrent callers of ``echo`` with texts ``f"{prefix} {client} {n}"``, until stopped or until
    Deputy is gone (a connection error ends a client when ``until_gone``)."""

    faulty: FaultyDeputy
    prefix: str
    clients: int = 4
    until_gone: bool = False
    answered: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    broken: int = 0
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> None:
        token = await self.faulty.token()  # before any client runs: a kill must not cut an OAuth flow short
        self.tasks = [asyncio.create_task(self._client(n, token)) for n in range(self.clients)]

    @property
    def responses(self) -> int:
        return len(self.answered) + len(self.refused) + len(self.unexpected)

    async def _client(self, n: int, token: str) -> None:
        async with httpx.AsyncClient(timeout=60) as http:
            i = 0
            while not self.stopping.is_set():
                text = f"{self.prefix} {n} {i}"
                i += 1
                try:
                    response = await call(self.faulty.deputy, token, SERVER, "echo", {"text": text}, http=http)
                except httpx.HTTPError:
                    self.broken += 1
                    if self.until_gone:
                        return
                    await asyncio.sleep(0.05)
                    continue
                self._sort(text, response)

    def _sort(self, text: str, response: httpx.Response) -> None:
        try:
            body: Any = response.json()
        except ValueError:
            body = None
        if response.status_code == 200 and isinstance(body, dict) and "result" in body:
            self.answered.append(text)
        elif response.status_code == 503 and isinstance(body, dict) and isinstance(body.get("error"), dict):
            self.refused.append(text)
        else:
            self.unexpected.append(f"{text}: HTTP {response.status_code} {response.text[:200]}")

    async def until(self, condition: Callable[[], bool], what: str, within: float = 90.0) -> None:
        """Wait for ``condition`` while the clients run; fail if a client died or it takes longer than ``within``."""
        deadline = time.monotonic() + within
        while not condition():
            failed = [task for task in self.tasks if task.done() and task.exception() is not None]
            assert not failed, [task.exception() for task in failed]
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            await asyncio.sleep(0.02)

    async def until_more(self, count: Callable[[], int], more: int, what: str) -> None:
        """Wait until ``count()`` has grown by ``more`` from now (see `until`)."""
        target = count() + more
        await self.until(lambda: count() >= target, what)

    async def stop(self) -> None:
        self.stopping.set()
        await asyncio.wait_for(asyncio.gather(*self.tasks), 120)


async def eventually_answered(faulty: FaultyDeputy, text: str, within: float = 60.0) -> None:
    """A call with ``text`` succeeds within ``within`` seconds (the service has recovered)."""
    await poll_until(lambda: _answers(faulty, text), f"a call to succeed again ({text})", within)


async def _answers(faulty: FaultyDeputy, text: str) -> bool:
    try:
        response = await call(faulty.deputy, await faulty.token(), SERVER, "echo", {"text": text})
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and "result" in response.json()


async def poll_until(check: Callable[[], Awaitable[bool]], what: str, within: float) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


def deputy_tcp_peers(pid: int) -> list[tuple[int, int]]:
    """(local port, remote port) of each established IPv4/IPv6 TCP connection the process holds."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    peers = []
    for table in ("tcp", "tcp6"):
        with open(f"/proc/{pid}/net/{table}") as rows:
            next(rows)
            for row in rows:
                fields = row.split()
                local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
                if inode in inodes and state == "01":  # TCP_ESTABLISHED
                    peers.append((int(local.rsplit(":", 1)[1], 16), int(remote.rsplit(":", 1)[1], 16)))
    return peers


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))
