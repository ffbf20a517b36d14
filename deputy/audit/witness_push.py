"""Push each signed checkpoint of the audit log to its witnesses (C2SP tlog-witness) and keep their cosignatures.

For every configured witness (``[audit] witnesses``: url and cosigner vkey), :class:`WitnessPusher` POSTs to
``{url}/add-checkpoint`` (tlog-witness, "add-checkpoint"): ``old <size>`` — the size this log last had cosigned by
that witness, 0 at first — the RFC 9162 consistency proof from that size, one base64 hash a line, an empty line,
then the signed checkpoint note. On 409 the witness's body is the size it has stored (``text/x.tlog.size``): the
push is retried once from that size. On 2xx the response lines are cosignature lines (tlog-cosignature v1); the one
from the witness's key is verified over the checkpoint and stored in ``audit_cosignatures`` (one row per size and
witness). On 403 the witness may still trust a key the log has retired (it was down during a rotation): the stored
hand-over checkpoints it missed (:mod:`deputy.audit.log_keys`) are pushed first, in order, and the push retried
once. Anything else (down, 4xx, 5xx, a cosignature that does not verify) is logged, and the next checkpoint tries
again from the last cosigned size: a witness never blocks appends.

Requests go through :mod:`deputy.outbound_http` (no redirect followed; an answer over ``MAX_ANSWER`` bytes is a
failure like any other).

The pusher runs as an :attr:`deputy.audit.log.AuditLog.after_checkpoint` callback. Pushes are serialised (one lock),
and a checkpoint older than what a witness already cosigned is skipped, so concurrent checkpoints never race each
other into 409s.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import aiohttp
from aiohttp.abc import AbstractResolver
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from deputy.audit.checkpoint import Checkpoint, CheckpointError, SignedCheckpoint, parse_decimal
from deputy.audit.cosignature import CosignatureVerifier
from deputy.audit.log import AuditLog
from deputy.audit.log_keys import HANDOVER
from deputy.audit.note import NoteError, b64, parse_note
from deputy.outbound_http import NoAnswer, fetch, open_session, step_timeout
from deputy.storage.tables import audit_checkpoints, audit_cosignatures

log = logging.getLogger(__name__)

TIMEOUT = 10.0  # each step: connecting, each read
MAX_ANSWER = 64 * 1024  # a witness answers with a few cosignature lines, or its size


@dataclass(frozen=True)
class Witness:
    url: str
    verifier: CosignatureVerifier

    @property
    def name(self) -> str:
        return self.verifier.name

    @classmethod
    def of(cls, url: str, vkey: str) -> Witness:
        return cls(url.rstrip("/"), CosignatureVerifier.from_vkey(vkey))


@dataclass(frozen=True)
class PushResult:
    witness: str
    size: int
    status: int | None  # the last HTTP status, None when the witness could not be reached
    line: str | None = None  # the stored cosignature line, on success
    error: str | None = None


def request_body(old_size: int, proof: Sequence[bytes], note: str) -> bytes:
    """An add-checkpoint body: ``old N``, the proof lines, an empty line, the checkpoint note."""
    return (f"old {old_size}\n" + "".join(f"{b64(h)}\n" for h in proof) + "\n" + note).encode()


class WitnessPusher:
    """Pushes checkpoints to witnesses; an ``AuditLog.after_checkpoint`` callback."""

    def __init__(
        self,
        audit_log: AuditLog,
        witnesses: Sequence[tuple[str, str]],
        *,
        resolver: AbstractResolver | None = None,
        timeout: float = TIMEOUT,
    ) -> None:
        """``resolver``: which addresses the witnesses' host names mean (the system's when None)."""
        self.log = audit_log
        self.witnesses = [Witness.of(url, vkey) for url, vkey in witnesses]
        self.resolver = resolver
        self.timeout = timeout
        self._cosigned: dict[str, int] = {}  # witness name -> latest size it cosigned for us
        self._lock = asyncio.Lock()

    async def __call__(self, signed: SignedCheckpoint) -> None:
        await self.push(signed)

    async def push(self, signed: SignedCheckpoint) -> list[PushResult]:
        """Push ``signed`` to every witness (concurrently); failures are logged and returned, never raised."""
        async with self._lock:
            if len(self._cosigned) < len(self.witnesses):
                await self._load_cosigned()
            # The body is a tlog-witness request, not a file: no Content-Type is made up for it.
            async with open_session(step_timeout(self.timeout), resolver=self.resolver,
                                    skip_auto_headers=("Content-Type",)) as session:
                results = await asyncio.gather(*(self._push_one(session, w, signed) for w in self.witnesses))
        for result in results:
            if result.error is not None:
                log.warning("witness %s did not cosign checkpoint %d: %s", result.witness, result.size, result.error)
        return list(results)

    async def _load_cosigned(self) -> None:
        async with self.log.engine.connect() as conn:
            rows = await conn.execute(
                select(audit_cosignatures.c.witness_name, func.max(audit_cosignatures.c.size)).group_by(
                    audit_cosignatures.c.witness_name
                )
            )
            stored = {str(name): int(size) for name, size in rows}
        for witness in self.witnesses:
            self._cosigned.setdefault(witness.name, stored.get(witness.name, 0))

    async def _push_one(self, session: aiohttp.ClientSession, witness: Witness, signed: SignedCheckpoint
                        ) -> PushResult:
        size = signed.checkpoint.size
        old = self._cosigned.get(witness.name, 0)
        if old > size:
            return PushResult(witness.name, size, None, error=f"already cosigned a larger size {old}; skipped")
        for attempt in range(2):
            try:
                proof = await self.log.consistency_proof(old, size) if 0 < old < size else []
                response = await fetch(session, "POST", f"{witness.url}/add-checkpoint", max_bytes=MAX_ANSWER,
                                       data=request_body(old, proof, signed.note))
            except NoAnswer as exc:
                return PushResult(witness.name, size, None, error=str(exc))
            except (ValueError, RuntimeError) as exc:
                return PushResult(witness.name, size, None, error=f"{type(exc).__name__}: {exc}")
            if response.status == 409 and attempt == 0:
                try:
                    old = parse_decimal(response.text.strip(), "witness size")
                except CheckpointError as exc:
                    return PushResult(witness.name, size, 409, error=f"409 with an unreadable size: {exc}")
                if old > size:
                    self._cosigned[witness.name] = old
                    return PushResult(witness.name, size, 409, error=f"witness is at a larger size {old}")
                continue
            if response.status == 403 and attempt == 0:
                caught_up = await self._catch_up(session, witness, old, size)
                if caught_up is not None:
                    if caught_up.error is not None:
                        return caught_up
                    old = self._cosigned.get(witness.name, 0)
                    continue
            if not 200 <= response.status < 300:
                return PushResult(
                    witness.name,
                    size,
                    response.status,
                    error=f"HTTP {response.status}: {response.text[:200]}",
                )
            line = self._own_line(witness, signed, response.text)
            if line is None:
                return PushResult(witness.name, size, response.status, error="no valid cosignature from its key")
            await store_cosignature(self.log.engine, size, witness.name, line)
            self._cosigned[witness.name] = max(self._cosigned.get(witness.name, 0), size)
            return PushResult(witness.name, size, response.status, line=line)
        return PushResult(witness.name, size, 409, error="409 again after retrying from the witness's size")

    async def _catch_up(
        self, session: aiohttp.ClientSession, witness: Witness, old: int, size: int
    ) -> PushResult | None:
        """A 403 may mean the witness still trusts a retired key: push it the hand-overs it missed (a rotation
        while it was down), in order, so that it follows them. None if there are none."""
        async with self.log.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(audit_checkpoints.c.note)
                    .where(
                        audit_checkpoints.c.size > old,
                        audit_checkpoints.c.size < size,
                        audit_checkpoints.c.note.contains(f"\n{HANDOVER} "),
                    )
                    .order_by(audit_checkpoints.c.size)
                )
            ).scalars()
            notes = [str(note) for note in rows]
        result = None
        for note in notes:
            try:
                handover = SignedCheckpoint(Checkpoint.parse(parse_note(note).text), note)
            except (NoteError, CheckpointError) as exc:
                return PushResult(witness.name, size, None, error=f"a stored hand-over is not a checkpoint: {exc}")
            result = await self._push_one(session, witness, handover)
            if result.error is not None:
                return result
        return result

    @staticmethod
    def _own_line(witness: Witness, signed: SignedCheckpoint, text: str) -> str | None:
        body = parse_note(signed.note).text
        for line in text.splitlines():
            if not line:
                continue
            try:
                witness.verifier.verify_line(body, line)
            except NoteError:
                continue
            return line + "\n"
        return None


async def store_cosignature(engine: AsyncEngine, size: int, witness_name: str, line: str) -> None:
    """Keep one cosignature line per (size, witness); a second one for the same pair is ignored."""
    try:
        async with engine.begin() as conn:
            await conn.execute(insert(audit_cosignatures).values(size=size, witness_name=witness_name, line=line))
    except IntegrityError:
        pass


async def stored_cosignatures(engine: AsyncEngine, size: int) -> list[tuple[str, str]]:
    """(witness name, cosignature line) stored for the checkpoint of ``size``."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(audit_cosignatures.c.witness_name, audit_cosignatures.c.line)
            .where(audit_cosignatures.c.size == size)
            .order_by(audit_cosignatures.c.witness_name)
        )
        return [(str(name), str(line)) for name, line in rows]


def cosigned_note(note: str, lines: Sequence[str]) -> str:
    """The checkpoint note with cosignature lines appended (as tlog-witness suggests clients keep them)."""
    return note + "".join(line if line.endswith("\n") else line + "\n" for line in lines)
