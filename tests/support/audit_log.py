"""Deputy's audit log read straight from its tables, for end-to-end tests.

Nothing here goes through Deputy's own reading code (``AuditLog``, ``deputy audit``): `read_log` selects the
rows of ``audit_leaves``, ``audit_nodes``, ``audit_checkpoints`` and ``audit_head`` in one snapshot, and
`verify_log` recomputes every leaf hash, the tree, every stored node, the head and every checkpoint's root
itself (RFC 9162 §2.1.1, with ``deputy.audit.merkle.MemoryTree`` as the reference tree).

`AuditProbe` sits in front of an upstream and asks the database, at the moment a ``tools/call`` arrives,
whether its ``decision`` record is already committed: "durable before forwarding", observed from outside.
`block_audit_writes` installs a trigger that aborts every insert into ``audit_leaves`` (audit storage that
cannot be written), `unblock_audit_writes` removes it. `KillableDeputy` is a ``deputy serve`` process the test
can ``kill -9`` and start again on the same port, configuration and database.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import sqlite3
import subprocess
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import asyncpg
import rfc8785
from sqlalchemy import select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from deputy.audit.checkpoint import SignedCheckpoint
from deputy.audit.merkle import CompactRange, MemoryTree, leaf_hash
from deputy.audit.note import NoteSigner, NoteVerifier
from deputy.audit.records import parse_record
from deputy.storage.db import Database
from deputy.storage.tables import audit_checkpoints, audit_head, audit_leaves, audit_nodes
from tests.support.deputy_process import PASSWORD, RunningDeputy, _wait_http, add_users, write_config
from tests.support.forked_deputy import DeputyProcess, start_deputy
from tests.support.sdk_client import free_port

TRIGGER = "deputy_test_block_audit"


def recorded_form(arguments: Any) -> Any:
    """Arguments as a record stores them: each integer beyond ±(2^53 - 1) as its digits (RFC 8785 holds no more)."""
    if type(arguments) is int and abs(arguments) > 2**53 - 1:
        return str(arguments)
    if isinstance(arguments, dict):
        return {key: recorded_form(value) for key, value in arguments.items()}
    if isinstance(arguments, list):
        return [recorded_form(value) for value in arguments]
    return arguments


def arguments_digest(arguments: Any) -> dict[str, str]:
    """What ``[audit] arguments = "digest"`` should store: SHA-256 of the RFC 8785 canonical JSON (recorded form)."""
    return {"sha256": hashlib.sha256(rfc8785.dumps(recorded_form(arguments))).hexdigest()}


@dataclass(frozen=True)
class Leaf:
    index: int
    entry: bytes
    record: Mapping[str, Any]


@dataclass(frozen=True)
class StoredCheckpoint:
    size: int
    root: bytes
    note: str


@dataclass
class LogSnapshot:
    leaves: list[Leaf]
    nodes: list[tuple[int, int, bytes]]
    checkpoints: list[StoredCheckpoint]
    head_size: int | None
    head_compact: bytes | None

    def of_type(self, record_type: str) -> list[Leaf]:
        return [leaf for leaf in self.leaves if leaf.record["type"] == record_type]

    def decisions(self, **fields: Any) -> list[Leaf]:
        """The ``decision`` records whose fields equal ``fields``."""
        return [
            leaf
            for leaf in self.of_type("decision")
            if all(leaf.record.get(name) == value for name, value in fields.items())
        ]

    def outcomes_of(self, decision_id: str) -> list[Leaf]:
        return [leaf for leaf in self.of_type("call.outcome") if leaf.record["decision_id"] == decision_id]


async def read_log(database_url: str) -> LogSnapshot:
    """Every row of the audit tables, read in one snapshot (a writer may be committing meanwhile)."""
    database = Database(database_url)
    try:
        async with database.engine.connect() as conn:
            if database.is_sqlite:
                await conn.exec_driver_sql("BEGIN")  # a WAL read transaction: one snapshot for every select
            else:
                conn = await conn.execution_options(isolation_level="REPEATABLE READ")
            leaves = (
                await conn.execute(select(audit_leaves.c.idx, audit_leaves.c.record).order_by(audit_leaves.c.idx))
            ).all()
            nodes = (await conn.execute(select(audit_nodes.c.level, audit_nodes.c.idx, audit_nodes.c.hash))).all()
            checkpoints = (
                await conn.execute(
                    select(audit_checkpoints.c.size, audit_checkpoints.c.root, audit_checkpoints.c.note).order_by(
                        audit_checkpoints.c.size
                    )
                )
            ).all()
            head = (await conn.execute(select(audit_head.c.size, audit_head.c.compact))).all()
    finally:
        await database.dispose()
    assert len(head) <= 1, f"audit_head has {len(head)} rows"
    return LogSnapshot(
        leaves=[Leaf(int(r.idx), bytes(r.record), parse_record(bytes(r.record))) for r in leaves],
        nodes=[(int(r.level), int(r.idx), bytes(r.hash)) for r in nodes],
        checkpoints=[StoredCheckpoint(int(r.size), bytes(r.root), str(r.note)) for r in checkpoints],
        head_size=int(head[0].size) if head else None,
        head_compact=bytes(head[0].compact) if head else None,
    )


def log_verifier(data_dir: Path, key_file: str = "audit.key") -> NoteVerifier:
    """The verifier of the key Deputy signs its checkpoints with (its key file in the data directory)."""
    return NoteSigner.from_key((data_dir / key_file).read_text(encoding="utf-8").strip()).verifier()


def verify_log(snapshot: LogSnapshot, verifier: NoteVerifier) -> MemoryTree:
    """Check the log is whole and consistent, recomputing everything; returns the recomputed tree."""
    indexes = [leaf.index for leaf in snapshot.leaves]
    assert indexes == list(range(len(indexes))), "leaf indexes are not contiguous from 0"
    tree = MemoryTree(leaf_hash(leaf.entry) for leaf in snapshot.leaves)
    assert snapshot.head_size == len(snapshot.leaves), (snapshot.head_size, len(snapshot.leaves))
    assert snapshot.head_compact is not None
    compact = CompactRange.from_bytes(snapshot.head_compact)
    assert compact.size == tree.size
    assert compact.root() == tree.root(), "the head's root is not the root of the leaves"
    for level, idx, stored in snapshot.nodes:
        assert level >= 1
        start, end = idx << level, (idx + 1) << level
        assert end <= tree.size, f"node ({level}, {idx}) lies beyond the tree"
        assert stored == tree.subtree_root(start, end), f"stored node ({level}, {idx}) is wrong"
    # Every perfect subtree the tree has completed is stored (a proof may need any of them).
    expected_nodes = sum(tree.size >> level for level in range(1, tree.size.bit_length()))
    assert len(snapshot.nodes) == expected_nodes, (len(snapshot.nodes), expected_nodes)
    for stored_checkpoint in snapshot.checkpoints:
        opened = SignedCheckpoint.open(stored_checkpoint.note, [verifier])
        assert opened.checkpoint.origin == verifier.name
        assert opened.checkpoint.size == stored_checkpoint.size
        assert opened.checkpoint.root == stored_checkpoint.root
        assert 0 < stored_checkpoint.size <= tree.size
        assert stored_checkpoint.root == tree.root(stored_checkpoint.size), (
            f"checkpoint at size {stored_checkpoint.size} does not match the recomputed root"
        )
    return tree


# Blocking audit writes on the real database


def _sqlite_path(database_url: str) -> str:
    return database_url.split("///", 1)[1]


def _asyncpg_url(database_url: str) -> str:
    return database_url.replace("postgresql+asyncpg://", "postgresql://", 1)


def _sqlite_execute(database_url: str, script: str) -> None:
    conn = sqlite3.connect(_sqlite_path(database_url), timeout=15)
    try:
        conn.executescript(script)
    finally:
        conn.close()


async def _pg_execute(database_url: str, sql: str) -> None:
    conn = await asyncpg.connect(_asyncpg_url(database_url), timeout=10)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def block_audit_writes(database_url: str) -> None:
    """Make every insert into ``audit_leaves`` fail, as storage that cannot be written would."""
    if database_url.startswith("sqlite"):
        await asyncio.to_thread(
            _sqlite_execute,
            database_url,
            f"""
            CREATE TRIGGER {TRIGGER} BEFORE INSERT ON audit_leaves
            BEGIN SELECT RAISE(ABORT, 'audit storage unwritable'); END;""",
        )
        return
    await _pg_execute(
        database_url,
        f"""
        CREATE FUNCTION {TRIGGER}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'audit storage unwritable'; END $$;
        CREATE TRIGGER {TRIGGER} BEFORE INSERT ON audit_leaves FOR EACH ROW EXECUTE FUNCTION {TRIGGER}();""",
    )


async def unblock_audit_writes(database_url: str) -> None:
    if database_url.startswith("sqlite"):
        await asyncio.to_thread(_sqlite_execute, database_url, f"DROP TRIGGER IF EXISTS {TRIGGER};")
        return
    await _pg_execute(
        database_url, f"DROP TRIGGER IF EXISTS {TRIGGER} ON audit_leaves; DROP FUNCTION IF EXISTS {TRIGGER}();"
    )


# Was the decision durable when the call arrived upstream?


@dataclass(frozen=True)
class ProbedCall:
    tool: Any
    arguments: Any
    recorded: bool  # a committed `decision` record with outcome allow for this tool and arguments existed


@dataclass
class AuditProbe:
    """ASGI middleware for an upstream: before passing a ``tools/call`` on, look in the audit log for its
    ``decision`` record (arguments stored or as their digest) and note whether it was already there."""

    app: ASGIApp
    database_url: str
    calls: list[ProbedCall] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request" or not message.get("more_body", False):
                break
        body = b"".join(m.get("body", b"") for m in messages if m["type"] == "http.request")
        try:
            parsed = json.loads(body or b"null")
        except ValueError:
            parsed = None
        if isinstance(parsed, dict) and parsed.get("method") == "tools/call":
            params = parsed.get("params") or {}
            tool, arguments = params.get("name"), params.get("arguments")
            self.calls.append(ProbedCall(tool, arguments, await self._recorded(tool, arguments)))

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _recorded(self, tool: Any, arguments: Any) -> bool:
        candidates = [recorded_form(arguments), arguments_digest(arguments)]
        for needle in (rfc8785.dumps(candidate) for candidate in candidates):
            if self.database_url.startswith("sqlite"):
                rows = await asyncio.to_thread(self._sqlite_search, needle)
            else:
                conn = await asyncpg.connect(_asyncpg_url(self.database_url), timeout=10)
                try:
                    rows = [
                        bytes(r["record"])
                        for r in await conn.fetch(
                            "SELECT record FROM audit_leaves WHERE position($1::bytea in record) > 0", needle
                        )
                    ]
                finally:
                    await conn.close()
            for entry in rows:
                record = json.loads(entry)
                if (
                    record["type"] == "decision"
                    and record["outcome"] == "allow"
                    and record["tool"] == tool
                    and record["arguments"] in candidates
                ):
                    return True
        return False

    def _sqlite_search(self, needle: bytes) -> list[bytes]:
        conn = sqlite3.connect(_sqlite_path(self.database_url), timeout=15)
        try:
            return [
                bytes(row[0])
                for row in conn.execute("SELECT record FROM audit_leaves WHERE instr(record, ?) > 0", (needle,))
            ]
        finally:
            conn.close()


# A Deputy process the test may kill


class KillableDeputy:
    """``deputy serve`` on a fixed port, config and database, which the test can SIGKILL and start again."""

    def __init__(self, directory: Path, database_url: str, upstream_url: str, extra_config: str = "") -> None:
        port = free_port()
        config = directory / "deputy.toml"
        write_config(config, port, upstream_url, extra_config)
        env = {
            **os.environ,
            "DEPUTY_CONFIG": str(config),
            "DEPUTY_DATA_DIR": str(directory / "data"),
            "DEPUTY_DATABASE_URL": database_url,
        }
        self.deputy = RunningDeputy(
            f"http://127.0.0.1:{port}", directory / "data", config, database_url, upstream_url, env
        )
        self.log_path = directory / "deputy.log"
        self.process: DeputyProcess | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        """``python -m deputy serve``, forked from a process that imported Deputy once
        (:mod:`tests.support.forked_deputy`): restarted twenty times per backend under load, its imports were most
        of a fault test's time. Its start (configuration, storage, recovery of the audit log) is its own."""
        assert self.process is None or self.process.poll() is not None, "deputy is already running"
        self._log = self.log_path.open("ab")
        self.process = start_deputy(["serve"], self.deputy.env, stdout=self._log, stderr=subprocess.STDOUT)
        _wait_http(f"{self.deputy.url}/healthz", self.process, "deputy serve")

    def kill(self) -> None:
        """SIGKILL: no shutdown handler runs, no last checkpoint is signed."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self._close_log()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


@contextmanager
def killable_deputy(
    directory: Path,
    database_url: str,
    upstream_url: str,
    extra_config: str = "",
    users: Mapping[str, str] | None = None,
) -> Iterator[KillableDeputy]:
    """A started `KillableDeputy` with ``users`` (username: password; alice by default), added as
    ``deputy users add`` does, in this process (:func:`tests.support.deputy_process.add_users`: no process start
    of two seconds of imports each); stopped on exit."""
    killable = KillableDeputy(directory, database_url, upstream_url, extra_config)
    add_users(killable.deputy, tuple((users or {"alice": PASSWORD}).items()))
    try:
        killable.start()
        yield killable
    finally:
        killable.stop()
