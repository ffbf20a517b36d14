"""The audit log: records appended as leaves of an RFC 9162 Merkle tree in SQL, with signed C2SP checkpoints.

Tree (RFC 9162 §2.1.1): leaf ``i`` is the canonical record bytes in ``audit_leaves``; its leaf hash is
``SHA-256(0x00 || record)``. ``audit_nodes`` keeps the hash of every *completed perfect subtree* of ``2**level``
leaves (``level >= 1``), starting at leaf ``idx * 2**level``: appending leaf ``n - 1`` completes exactly the
subtrees of the trailing zero bits of ``n``, so writes are ~1 node per record (n/2 + n/4 + ... < n), and such a
node never changes. Level 0 is not stored: a leaf's hash is recomputed from its ``audit_leaves`` row (1.5 µs per
KiB), which halves the node rows and their index, and a proof needs at most two level-0 hashes. Every RFC 9162
subtree ``[start, end)`` (``start`` a multiple of the smallest power of two >= ``end - start``; the only ranges
the §2.1.3 and §2.1.4 proofs ask for) is the fold of the perfect subtrees of the binary decomposition of
``end - start``, so a root or a proof reads O(log n) rows, fetched in one query per table.

Sequencing (:mod:`deputy.audit.sequencer`): one log per database, shared by every replica. An append transaction
first takes the sequencer lock — ``pg_advisory_xact_lock(SEQUENCER_LOCK)`` on PostgreSQL, ``BEGIN IMMEDIATE``
(the database's one write lock) on SQLite — then reads ``audit_head`` (size and the ``CompactRange`` right edge),
inserts the leaves and the nodes they complete, and writes the new head, all in that one transaction: a failure
leaves nothing, and two processes on two engines interleave into one contiguous log whose head is always the root
of all its leaves. ``audit_leaves.idx`` is the primary key, so even a corrupted head could not overwrite a leaf.
The lock is waited for, and the transaction runs, within ``[audit] append_timeout_ms``: a holder that never lets
go (a replica stopped mid-append) makes appends fail, not hang, and :meth:`AuditLog.check_appendable` tells
readiness so.

On SQLite the transaction runs as one trip to a writer thread with its own connection
(:mod:`deputy.audit.sqlite_writer`); :func:`plan_batch` decides what it writes on both backends.

Group commit: :meth:`AuditLog.append` canonicalises the record in the caller's task, queues it and waits; one
writer task commits up to ``batch_max`` queued records per transaction and then resolves their futures, so a
receipt means the record is committed, and under load one commit serves many appends. If the transaction fails,
every append of that batch raises :class:`AuditUnavailable` and the writer goes on with the next batch (a
database that comes back works again). A record nobody waits for (``append(..., linger=True)``: a call's outcome,
appended after its answer was sent) waits up to :data:`LINGER_SECONDS` for one somebody does wait for, to share its
transaction: under load a call costs one commit share, not two; :meth:`AuditLog.stop` commits all that is queued.
Durability is the database's: on SQLite, Deputy's ``synchronous=NORMAL`` in WAL mode survives a process crash, while
a power loss may lose the last commits.

Checkpoints (C2SP tlog-checkpoint): a background task signs ``origin / size / base64(root)`` every
``checkpoint_every`` records or ``checkpoint_interval_ms``, whichever comes first, and once more on
:meth:`AuditLog.stop`, only when the log grew since the latest stored checkpoint. The size and root are read from
``audit_head`` inside a transaction holding the sequencer lock, and stored (one row per size) in that same
transaction, so the log can never sign two heads that are not one the prefix of the other. A tree size alone
proves nothing (RFC 9162 §2.1.3 and §2.1.4 proofs are relative to a size): verifiers take sizes from signed checkpoints.

After a checkpoint is stored, each callback in :attr:`AuditLog.after_checkpoint` runs in its own background task
with the new signed checkpoint (appends never wait for them; a failure is logged); :meth:`AuditLog.stop` waits up
to ``after_checkpoint_timeout`` seconds for those still running. The log does not know who listens: whoever builds
it adds the callbacks (:class:`deputy.services.Services` adds the witness pusher, :mod:`deputy.audit.witness_push`,
when ``[audit] witnesses`` are configured), so this module imports none of them.

Metrics (:mod:`deputy.telemetry.metrics`): each committed batch's size and commit time, failed commits, and — read
at scrape time — the queue's depth and the age of the newest checkpoint, whichever replica signed it.

Measured append rates by backend and appenders: ``bench/audit_append.py``, figures in ``bench/README.md``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import sqlite3
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any

from sqlalchemy import insert, select, tuple_
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from deputy.audit.checkpoint import Checkpoint, SignedCheckpoint
from deputy.audit.log_plan import Node, Queued, Receipt, compact_of, decompose, fold, plan_batch, proof_ranges
from deputy.audit.merkle import EMPTY_ROOT, CompactRange, consistency_proof, inclusion_proof, leaf_hash
from deputy.audit.note import NoteSigner, NoteVerifier
from deputy.audit.records import canonical
from deputy.audit.sequencer import Sequencer
from deputy.audit.settings import AuditSettings
from deputy.clock import monotonic, now
from deputy.storage.tables import audit_checkpoints, audit_leaves, audit_nodes
from deputy.telemetry.metrics import Metrics

log = logging.getLogger(__name__)

READ_BATCH = 1000
# How long a record nobody waits for may stay queued for company (see the module docstring): far below the second
# a checkpoint may take, far above the gap between two calls under load.
LINGER_SECONDS = 0.02


class AuditUnavailable(RuntimeError):
    """The record could not be made durable; the caller must not go on as if it had been (fail closed)."""


class AuditLog:
    """One process's handle on the database's audit log; see the module docstring."""

    def __init__(
        self, engine: AsyncEngine, settings: AuditSettings, signer: NoteSigner, retired: Iterable[NoteVerifier] = (),
        metrics: Metrics | None = None,
    ) -> None:
        if signer.name != settings.origin:
            raise ValueError(f"signer key {signer.name!r} is not named after the log origin {settings.origin!r}")
        self.engine = engine
        self.settings = settings
        self.signer = signer
        self.verifier = signer.verifier()
        # Keys the log had before a rotation (deputy.audit.rotation): they still open the checkpoints they signed.
        self.verifiers = [self.verifier, *(k for k in retired if k != self.verifier)]
        self._sequencer = Sequencer(engine, settings.append_timeout_ms)
        self.commits = 0  # successful append transactions: under load, fewer than appends
        self._queue: deque[Queued] = deque()
        self._waited_for = 0  # queued records somebody waits for (a writer with none of them may linger)
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._checkpointer: asyncio.Task[None] | None = None
        self._checkpoint_due = asyncio.Event()
        self._checkpointed_size = 0  # the latest checkpoint this process knows of
        self._checkpointed_at: int | None = None  # and when it was signed (seconds since the epoch)
        self._stopped = False
        # Run in the background after each stored checkpoint (see the module docstring).
        self.after_checkpoint: list[Callable[[SignedCheckpoint], Awaitable[None]]] = []
        self.after_checkpoint_timeout = 10.0
        self._after_tasks: set[asyncio.Task[None]] = set()
        # A CLI command's log counts into metrics nobody scrapes: the write path has no "if metrics" in it.
        self.metrics = metrics if metrics is not None else Metrics()
        self.metrics.audit_queue_depth.set_function(lambda: len(self._queue))
        self.metrics.audit_checkpoint_age.set_function(self._checkpoint_age)

    # Appending

    async def append(self, record: Mapping[str, Any], *, linger: bool = False) -> Receipt:
        """Append ``record``; returns once it is committed. Raises ``RecordError`` (not serialisable, nothing
        queued) or ``AuditUnavailable`` (the transaction failed; nothing of it is stored). ``linger``: nobody is
        held until it commits, so it may wait for company (:data:`LINGER_SECONDS`, the module docstring)."""
        entry = canonical(record)
        if self._stopped:
            raise AuditUnavailable("the audit log is stopped")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Receipt] = loop.create_future()
        first = not self._queue
        self._queue.append(Queued(entry, leaf_hash(entry), future, not linger, monotonic() if linger else 0.0))
        self._waited_for += not linger
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._write_loop(), name="audit-log-writer")
        if first or not linger:  # a lingering record joining others does not hurry the writer
            self._wake.set()
        # A cancelled caller leaves its record queued: it is written anyway, which errs on the side of the record.
        return await future

    async def _write_loop(self) -> None:
        batch: list[Queued] = []
        try:
            while True:
                if not self._queue:
                    self._wake.clear()
                    if self._stopped:
                        return
                    await self._wake.wait()
                    continue
                if not self._waited_for and not self._stopped and len(self._queue) < self.settings.batch_max:
                    linger = self._queue[0].queued_at + LINGER_SECONDS - monotonic()
                    if linger > 0:  # only records nobody waits for: wait for one somebody does, or the linger
                        self._wake.clear()
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(self._wake.wait(), linger)
                        continue
                batch = [self._queue.popleft() for _ in range(min(len(self._queue), self.settings.batch_max))]
                self._waited_for -= sum(queued.waited_for for queued in batch)
                began = monotonic()
                try:
                    start, size = await self._commit(batch)
                except Exception as exc:
                    self.metrics.audit_commit_failures.inc()
                    log.error("audit append of %d records failed: %r", len(batch), exc)
                    _fail(batch, exc)
                else:
                    self.metrics.audit_commit_seconds.observe(monotonic() - began)
                    self.metrics.audit_batch_records.observe(len(batch))
                    for offset, queued in enumerate(batch):
                        if not queued.future.done():
                            queued.future.set_result(Receipt(start + offset, queued.leaf))
                    if size - self._checkpointed_size >= self.settings.checkpoint_every:
                        self._checkpoint_due.set()
                batch = []
        finally:
            # Cancelled (loop shutdown) mid-batch or with appends queued: none of them is known durable.
            _fail([*batch, *self._queue], None)
            self._queue.clear()
            self._waited_for = 0

    async def _compact(self, conn: AsyncConnection) -> CompactRange | None:
        head = await self._sequencer.head(conn)
        return compact_of(head) if head is not None else None

    async def _commit(self, batch: list[Queued]) -> tuple[int, int]:
        """Write one batch in one transaction; returns (index of its first record, new tree size)."""
        plan = await self._sequencer.commit(lambda head: plan_batch(head, batch), now())
        self.commits += 1
        return plan.start, plan.size

    async def check_appendable(self) -> None:
        """Raise ``AuditUnavailable`` unless an append would now get the sequencer lock and read the head within
        ``append_timeout_ms`` (readiness: while this fails, so does every append, and every call with it)."""
        try:
            await self._sequencer.probe()
        except (SQLAlchemyError, sqlite3.Error, OSError) as exc:
            raise AuditUnavailable(f"the audit log cannot take its sequencer lock: {type(exc).__name__}") from exc

    # Checkpoints

    async def start(self) -> None:
        """Start signing checkpoints in the background (appends work without it; this appends nothing)."""
        if self._checkpointer is not None:
            return
        self._stopped = False
        latest = await self.latest_checkpoint()
        self._checkpointed_size = latest.checkpoint.size if latest is not None else 0
        async with self.engine.connect() as conn:
            self._note_newest(await _newest_checkpoint(conn))
        self._checkpointer = asyncio.create_task(self._checkpoint_loop(), name="audit-log-checkpointer")

    async def stop(self) -> None:
        """Commit what is queued, stop the background task and sign a last checkpoint if the log grew."""
        self._stopped = True
        self._wake.set()
        if self._writer is not None:
            await self._writer
            self._writer = None
        if self._checkpointer is not None:
            # Told to end, not cancelled: a cancelled checkpoint's transaction would end whenever its thread did.
            self._checkpoint_due.set()
            await self._checkpointer
            self._checkpointer = None
        try:
            await self.sign_checkpoint()
        except Exception as exc:
            log.error("audit checkpoint on stop failed: %r", exc)
        if self._after_tasks:
            await asyncio.wait(set(self._after_tasks), timeout=self.after_checkpoint_timeout)
        await self._sequencer.close()

    async def _checkpoint_loop(self) -> None:
        interval = self.settings.checkpoint_interval_ms / 1000
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._checkpoint_due.wait(), interval)
            if self._stopped:
                return  # stop() signs the last checkpoint itself
            self._checkpoint_due.clear()
            try:
                await self.sign_checkpoint()
            except Exception as exc:  # the next round retries; appends do not depend on checkpoints
                log.error("audit checkpoint failed: %r", exc)

    async def sign_checkpoint(self) -> SignedCheckpoint | None:
        """Sign and store a checkpoint of the current head, unless it is empty or already checkpointed."""
        async with self.engine.begin() as conn:
            await self._sequencer.lock(conn)
            compact = await self._compact(conn)
            newest = await _newest_checkpoint(conn)
            if compact is None or compact.size == 0 or (newest is not None and newest[0] >= compact.size):
                self._note_newest(newest)  # perhaps another replica's
                return None
            signed = SignedCheckpoint.sign(Checkpoint(self.settings.origin, compact.size, compact.root()), self.signer)
            signed_at = now()
            await conn.execute(
                insert(audit_checkpoints).values(
                    size=compact.size, root=compact.root(), note=signed.note, created_at=signed_at
                )
            )
        self._note_newest((compact.size, signed_at))
        for callback in self.after_checkpoint:
            task = asyncio.create_task(_after_checkpoint(callback, signed), name="audit-after-checkpoint")
            self._after_tasks.add(task)
            task.add_done_callback(self._after_tasks.discard)
        return signed

    def _note_newest(self, newest: tuple[int, int] | None) -> None:
        if newest is not None and newest[0] >= self._checkpointed_size:
            self._checkpointed_size, self._checkpointed_at = newest

    def _checkpoint_age(self) -> float:
        """Seconds since the newest checkpoint this process has seen was signed (a gauge read at scrape time)."""
        return float(now() - self._checkpointed_at) if self._checkpointed_at is not None else math.nan

    async def latest_checkpoint(self) -> SignedCheckpoint | None:
        return await self._checkpoint(
            select(audit_checkpoints.c.note).order_by(audit_checkpoints.c.size.desc()).limit(1)
        )

    async def checkpoint(self, size: int) -> SignedCheckpoint | None:
        return await self._checkpoint(select(audit_checkpoints.c.note).where(audit_checkpoints.c.size == size))

    async def _checkpoint(self, query: Any) -> SignedCheckpoint | None:
        async with self.engine.connect() as conn:
            note = (await conn.execute(query)).scalar()
        # Opened with the log's own key: a stored note that does not verify is corruption, not a checkpoint.
        return SignedCheckpoint.open(note, self.verifiers) if note is not None else None

    # Reading and proofs

    async def size(self) -> int:
        """The committed tree size (the head; it may be ahead of the latest checkpoint)."""
        async with self.engine.connect() as conn:
            compact = await self._compact(conn)
        return compact.size if compact is not None else 0

    async def root(self) -> tuple[int, bytes]:
        """The committed (size, root) of the head."""
        async with self.engine.connect() as conn:
            compact = await self._compact(conn)
        return (compact.size, compact.root()) if compact is not None else (0, EMPTY_ROOT)

    async def subtree_root(self, start: int, end: int) -> bytes:
        """The MTH of the RFC 9162 subtree ``[start, end)`` (aligned; see ``_decompose``), from O(log n) rows."""
        return (await self._subtree_roots([(start, end)]))[(start, end)]

    async def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """RFC 9162 §2.1.3.1 PATH for leaf ``index`` in the tree of ``size`` leaves (``size`` <= the head)."""
        ranges = proof_ranges(lambda fetch: inclusion_proof(index, size, fetch))
        hashes = await self._subtree_roots(ranges, size)
        return inclusion_proof(index, size, lambda s, e: hashes[(s, e)])

    async def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """RFC 9162 §2.1.4.1 PROOF from ``old_size`` to ``new_size`` (``0 < old_size <= new_size`` <= the head)."""
        ranges = proof_ranges(lambda fetch: consistency_proof(old_size, new_size, fetch))
        hashes = await self._subtree_roots(ranges, new_size)
        return consistency_proof(old_size, new_size, lambda s, e: hashes[(s, e)])

    async def _subtree_roots(
        self, ranges: Iterable[tuple[int, int]], size: int | None = None
    ) -> dict[tuple[int, int], bytes]:
        ranges = list(ranges)
        plans = {r: decompose(*r) for r in ranges}
        wanted = {node for nodes in plans.values() for node in nodes}
        upper = {node for node in wanted if node[0] > 0}
        leaves = sorted(idx for level, idx in wanted if level == 0)
        hashes: dict[Node, bytes] = {}
        async with self.engine.connect() as conn:
            compact = await self._compact(conn)
            committed = compact.size if compact is not None else 0
            limit = max([end for _, end in ranges] + ([size] if size is not None else []), default=0)
            if limit > committed:
                raise ValueError(f"tree size {limit} is beyond the log's size {committed}")
            if upper:
                rows = await conn.execute(
                    select(audit_nodes.c.level, audit_nodes.c.idx, audit_nodes.c.hash).where(
                        tuple_(audit_nodes.c.level, audit_nodes.c.idx).in_(sorted(upper))
                    )
                )
                hashes.update({(int(r.level), int(r.idx)): bytes(r.hash) for r in rows})
            if leaves:
                rows = await conn.execute(
                    select(audit_leaves.c.idx, audit_leaves.c.record).where(audit_leaves.c.idx.in_(leaves))
                )
                hashes.update({(0, int(r.idx)): leaf_hash(bytes(r.record)) for r in rows})
        missing = wanted - hashes.keys()
        if missing:
            raise RuntimeError(f"audit log is missing tree nodes {sorted(missing)[:4]} below its head")
        return {r: fold([hashes[node] for node in nodes]) for r, nodes in plans.items()}

    async def leaves(
        self, start: int = 0, end: int | None = None, batch: int = READ_BATCH
    ) -> AsyncIterator[tuple[int, bytes]]:
        """Stream ``(index, canonical record bytes)`` for ``start <= index < end`` (to the head), ``batch`` rows per
        query; no connection is held while the caller consumes a batch."""
        position = start
        while end is None or position < end:
            query = select(audit_leaves.c.idx, audit_leaves.c.record).where(audit_leaves.c.idx >= position)
            if end is not None:
                query = query.where(audit_leaves.c.idx < end)
            async with self.engine.connect() as conn:
                rows = (await conn.execute(query.order_by(audit_leaves.c.idx).limit(batch))).all()
            if not rows:
                return
            for row in rows:
                yield int(row.idx), bytes(row.record)
            position = int(rows[-1].idx) + 1


async def _newest_checkpoint(conn: AsyncConnection) -> tuple[int, int] | None:
    """(size, created_at) of the newest stored checkpoint, whoever signed it."""
    row = (await conn.execute(select(audit_checkpoints.c.size, audit_checkpoints.c.created_at)
                              .order_by(audit_checkpoints.c.size.desc()).limit(1))).first()
    return (int(row.size), int(row.created_at)) if row is not None else None


async def _after_checkpoint(callback: Callable[[SignedCheckpoint], Awaitable[None]], signed: SignedCheckpoint) -> None:
    try:
        await callback(signed)
    except Exception as exc:  # a callback never affects the log
        log.error("after-checkpoint callback for size %d failed: %r", signed.checkpoint.size, exc)


def _fail(batch: Iterable[Queued], cause: BaseException | None) -> None:
    for queued in batch:
        if not queued.future.done():
            error = AuditUnavailable("the audit log could not commit the record")
            error.__cause__ = cause
            queued.future.set_exception(error)
