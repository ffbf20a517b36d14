"""Verify the audit log stored in the database (:mod:`deputy.audit.log`), from its record bytes up, read only.

One pass, leaves streamed in large batches (memory is the batch plus the compact range):

- every leaf is present at its index (no gap, nothing beyond the head) and is a canonical record
  (:mod:`deputy.audit.verify.record_checks`); its leaf hash is recomputed (RFC 9162 §2.1.1);
- every stored perfect-subtree hash (``audit_nodes``) is compared with the recomputed one; nodes stored beyond the
  last leaf are reported;
- every checkpoint's signature (with the log's keys, followed through hand-overs), its size and root columns, and
  its root against the recomputed one (:class:`deputy.audit.verify.tree.Tree`);
- the head (``audit_head``) against the number of leaves and the recomputed tree;
- the records after the latest signed checkpoint (at most ``allow_unsigned``), and the anchors given: checkpoints
  trusted from outside the log, each of which must be a prefix of it (:mod:`deputy.audit.verify.anchors`);
- witnesses, when their cosigner keys are given (:mod:`deputy.audit.verify.witnesses`).

Whoever can write the database can rewrite records, nodes and head without any key and delete the checkpoints
above the change; only the unsigned-records limit and the anchors catch that. Whoever also holds the log's key can
re-sign a rewrite; only anchors (a kept checkpoint, a witness) catch that. The engine given should be read only
(:func:`deputy.audit.verify.readonly.open_readonly`): verifying never writes.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import Future
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from deputy.audit.cosignature import CosignatureVerifier
from deputy.audit.log_keys import LogKeys
from deputy.audit.merkle import CompactRange
from deputy.audit.note import NoteVerifier
from deputy.audit.verify.anchors import Anchor
from deputy.audit.verify.record_checks import auto_workers, digest_entries, executor
from deputy.audit.verify.report import Problem, Progress, VerifyReport
from deputy.audit.verify.tree import PendingCheckpoint, Tree, node_problems, position_problem
from deputy.audit.verify.witnesses import check_stored_cosignatures
from deputy.storage.tables import audit_checkpoints, audit_head, audit_leaves, audit_nodes

BATCH = 32768


def log_keys(keys: NoteVerifier | LogKeys) -> LogKeys:
    return keys if isinstance(keys, LogKeys) else LogKeys([keys])


async def verify_database(
    engine: AsyncEngine,
    verifier: NoteVerifier | LogKeys,
    *,
    witnesses: Sequence[CosignatureVerifier] = (),
    quorum: int | None = None,
    anchors: Sequence[Anchor] = (),
    allow_unsigned: int = 0,
    progress: Progress | None = None,
    workers: int | None = None,
    batch: int = BATCH,
) -> VerifyReport:
    """Verify the log stored in ``engine``'s database against the log's public key (see the module docstring).

    Everything is read in one snapshot (:func:`_snapshot`): records a running Deputy appends meanwhile are not seen,
    rather than seen beyond the head read before them (which is what a rewrite looks like)."""
    async with _snapshot(engine) as conn:
        started = time.perf_counter()
        keys = log_keys(verifier)
        report = VerifyReport(source="database", origin=keys.origin, vkey=keys.vkey())
        tree = Tree(report, keys, collect_nodes=True)
        for anchor in anchors:
            tree.add_anchor(anchor)
        head = (await conn.execute(select(audit_head.c.size, audit_head.c.compact))).first()
        rows = (
            await conn.execute(
                select(audit_checkpoints.c.size, audit_checkpoints.c.root, audit_checkpoints.c.note).order_by(
                    audit_checkpoints.c.size
                )
            )
        ).all()
        head_size = int(head.size) if head is not None else 0
        report.head_size = head_size if head is not None else None
        for row in rows:
            tree.add_checkpoint(PendingCheckpoint(int(row.size), str(row.note), bytes(row.root), int(row.size)))
        report.latest_checkpoint = int(rows[-1].size) if rows else None

        report.workers = auto_workers(workers, head_size)
        pool = executor(report.workers)
        bad_nodes: set[tuple[int, int]] = set()
        expected = head_size
        try:
            pending: deque[tuple[list[int], Future[Any] | tuple[list[bytes], list[tuple[int, str]]]]] = deque()
            position = 0

            async def drain_one() -> None:
                indexes, job = pending.popleft()
                hashes, problems = await asyncio.wrap_future(job) if isinstance(job, Future) else job
                for offset, message in problems:
                    tree.mark(indexes[offset])
                    report.add(
                        Problem("record", f"leaf {indexes[offset]}: {message}", index=indexes[offset],
                                end=indexes[offset] + 1)
                    )
                before = tree.compact.size
                for index, leaf in zip(indexes, hashes, strict=True):
                    if index != tree.compact.size and not tree.shifted:
                        position_problem(tree, index)
                    tree.append(leaf)
                stored = await _stored_nodes(conn, before, tree.compact.size)
                node_problems(tree, stored, bad_nodes)
                tree.judge()
                if progress is not None:
                    progress(tree.compact.size, max(expected, tree.compact.size))

            while True:
                chunk = (
                    await conn.execute(
                        select(audit_leaves.c.idx, audit_leaves.c.record)
                        .where(audit_leaves.c.idx >= position)
                        .order_by(audit_leaves.c.idx)
                        .limit(batch)
                    )
                ).all()
                if not chunk:
                    break
                indexes = [int(r.idx) for r in chunk]
                entries = [bytes(r.record) for r in chunk]
                position = indexes[-1] + 1
                job = pool.submit(digest_entries, entries) if pool is not None else digest_entries(entries)
                pending.append((indexes, job))
                while len(pending) > max(2, 2 * report.workers):
                    await drain_one()
            while pending:
                await drain_one()
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
        tree.finish(allow_unsigned)
        n = tree.compact.size
        beyond = await _nodes_beyond(conn, n)
        if beyond:
            report.add(Problem("node", f"{beyond} tree nodes are stored beyond the last leaf ({n} leaves)", index=n))
        if head is None:
            if n:
                report.add(Problem("head", f"there is no head, but {n} leaves", size=0))
        else:
            if head_size > n:
                report.add(Problem("head", f"head says size {head_size}, only {n} leaves", index=n, size=head_size))
            elif head_size < n:
                report.add(
                    Problem(
                        "extra",
                        f"head says size {head_size}, but there are {n} leaves (leaf {head_size} "
                        "and on are beyond the head)",
                        index=head_size,
                        size=head_size,
                    )
                )
            else:
                try:
                    compact = CompactRange.from_bytes(bytes(head.compact))
                except ValueError as exc:
                    report.add(Problem("head", f"head's compact range is corrupt: {exc}", size=head_size))
                else:
                    if compact.size != head_size or compact.hashes != tree.compact.hashes:
                        report.add(
                            Problem(
                                "head", f"head at size {head_size}: its tree does not match the records", size=head_size
                            )
                        )
        if witnesses:
            await check_stored_cosignatures(conn, report, witnesses, quorum)
        report.seconds = time.perf_counter() - started
        return report


@asynccontextmanager
async def _snapshot(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """One connection whose reads all see one state of the database: a WAL read transaction on SQLite, a
    ``REPEATABLE READ`` transaction on PostgreSQL."""
    async with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            await conn.exec_driver_sql("BEGIN")
            yield conn
        else:
            snapshot = await conn.execution_options(isolation_level="REPEATABLE READ")
            async with snapshot.begin():
                yield snapshot


async def _stored_nodes(conn: AsyncConnection, before: int, after: int) -> dict[tuple[int, int], bytes]:
    """The stored nodes completed by appending leaves ``before..after-1``: level L, idx from before >> L to
    (after >> L) - 1 (the node ending at leaf (idx + 1) * 2**L - 1)."""
    ranges = []
    level = 1
    while (1 << level) <= after:
        low, high = before >> level, (after >> level) - 1
        if high >= low:
            ranges.append(and_(audit_nodes.c.level == level, audit_nodes.c.idx.between(low, high)))
        level += 1
    if not ranges:
        return {}
    rows = await conn.execute(select(audit_nodes.c.level, audit_nodes.c.idx, audit_nodes.c.hash).where(or_(*ranges)))
    return {(int(r.level), int(r.idx)): bytes(r.hash) for r in rows}


async def _nodes_beyond(conn: AsyncConnection, n: int) -> int:
    conditions = [and_(audit_nodes.c.level == level, audit_nodes.c.idx >= (n >> level)) for level in range(1, 63)]
    count = (await conn.execute(select(func.count()).select_from(audit_nodes).where(or_(*conditions)))).scalar()
    return int(count or 0)


