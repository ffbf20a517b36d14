"""The audit log on both backends: durable contiguous appends, group commit, one sequencer across engines,
proofs that verify against the signed checkpoints, checkpoint timing, and failing closed."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import create_async_engine

from deputy.audit.checkpoint import SignedCheckpoint
from deputy.audit.log import AuditLog, AuditUnavailable
from deputy.audit.merkle import MemoryTree, leaf_hash, verify_consistency, verify_inclusion
from deputy.audit.note import NoteSigner, generate_signer_key
from deputy.audit.records import RecordError, new_record, parse_record
from deputy.audit.settings import AuditSettings
from deputy.storage.db import Database
from deputy.storage.tables import audit_checkpoints, audit_leaves, audit_nodes

ORIGIN = "deputy.test/deputy-audit"
SIGNER = NoteSigner.from_key(generate_signer_key(ORIGIN))


def make_settings(**overrides: int) -> AuditSettings:
    values = {"checkpoint_every": 1000, "checkpoint_interval_ms": 3_600_000, "batch_max": 512, **overrides}
    return AuditSettings(origin=ORIGIN, key_file=Path("/nonexistent/audit.key"), **values)  # type: ignore[arg-type]



async def stored(db: Database) -> list[bytes]:
    async with db.engine.connect() as conn:
        rows = (
            await conn.execute(select(audit_leaves.c.idx, audit_leaves.c.record).order_by(audit_leaves.c.idx))
        ).all()
    assert [r.idx for r in rows] == list(range(len(rows)))  # contiguous from 0
    return [bytes(r.record) for r in rows]


async def checkpoints(db: Database) -> list[SignedCheckpoint]:
    async with db.engine.connect() as conn:
        notes = (await conn.execute(select(audit_checkpoints.c.note).order_by(audit_checkpoints.c.size))).scalars()
        return [SignedCheckpoint.open(note, [SIGNER.verifier()]) for note in notes]


class ObservedLog(AuditLog):
    """An audit log whose background checkpoint rounds a test can await, instead of sleeping while they run."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rounds_begun = 0
        self.rounds_done = 0
        self._round_done = asyncio.Condition()

    async def sign_checkpoint(self) -> SignedCheckpoint | None:
        self.rounds_begun += 1
        try:
            return await super().sign_checkpoint()
        finally:
            async with self._round_done:
                self.rounds_done += 1
                self._round_done.notify_all()

    async def rounds(self, count: int) -> None:
        """Return once ``count`` more checkpoint rounds have finished."""
        target = self.rounds_done + count
        async with self._round_done:
            await asyncio.wait_for(self._round_done.wait_for(lambda: self.rounds_done >= target), 10.0)

    def checkpoint_due(self) -> bool:
        return self._checkpoint_due.is_set()


async def wait_for_checkpoint(log: AuditLog, size: int) -> None:
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        latest = await log.latest_checkpoint()
        if latest is not None and latest.checkpoint.size >= size:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"no checkpoint of size {size} within 10 s")


async def check_log(db: Database, log: AuditLog) -> MemoryTree:
    """Head root == MemoryTree root over the stored bytes; every stored checkpoint is that tree's root at its size,
    every DB proof verifies against the signed checkpoints, and each checkpoint is consistent with the next."""
    entries = await stored(db)
    tree = MemoryTree(leaf_hash(e) for e in entries)
    assert await log.root() == (tree.size, tree.root())
    signed = await checkpoints(db)
    for cp in signed:
        assert cp.checkpoint.origin == ORIGIN and cp.signers == (ORIGIN,)
        assert cp.checkpoint.root == tree.root(cp.checkpoint.size)
        size, root = cp.checkpoint.size, cp.checkpoint.root
        for index in sorted({0, size // 3, size // 2, size - 1}):
            proof = await log.inclusion_proof(index, size)
            verify_inclusion(index, size, leaf_hash(entries[index]), proof, root)
    for old, new in itertools.pairwise(signed):
        proof = await log.consistency_proof(old.checkpoint.size, new.checkpoint.size)
        verify_consistency(old.checkpoint.size, new.checkpoint.size, old.checkpoint.root, new.checkpoint.root, proof)
    return tree


async def test_appends_are_durable_contiguous_and_canonical(fresh: Database) -> None:
    log = AuditLog(fresh.engine, make_settings(), SIGNER)
    records = [new_record("decision", n=i, tool="delete_user", allowed=i % 2 == 0) for i in range(37)]
    receipts = [await log.append(r) for r in records]
    assert [r.index for r in receipts] == list(range(37))
    # Durable: a second engine (a new process, as far as the database is concerned) reads every record.
    other = Database(fresh.url)
    try:
        assert [parse_record(e) for e in await stored(other)] == records
        entries = await stored(other)
        assert [r.leaf_hash for r in receipts] == [leaf_hash(e) for e in entries]
        reader = AuditLog(other.engine, make_settings(), SIGNER)
        assert [i async for i, _ in reader.leaves(5, 30, batch=7)] == list(range(5, 30))
        assert [e async for _, e in reader.leaves(batch=10)] == entries
    finally:
        await other.dispose()
    tree = await check_log(fresh, log)
    # Every RFC 9162 subtree from the nodes table equals the in-memory tree's.
    for start, end in [(0, 37), (0, 32), (32, 37), (32, 36), (36, 37), (8, 16), (16, 21), (4, 5)]:
        assert await log.subtree_root(start, end) == tree.subtree_root(start, end)
    for index, size in [(0, 1), (0, 37), (36, 37), (17, 20), (31, 33)]:
        assert await log.inclusion_proof(index, size) == tree.inclusion_proof(index, size)
    for old, new in [(1, 37), (7, 8), (16, 37), (20, 33), (37, 37)]:
        assert await log.consistency_proof(old, new) == tree.consistency_proof(old, new)
    # About one node row per record: the completed perfect subtrees of level >= 1 only.
    async with fresh.engine.connect() as conn:
        nodes = (await conn.execute(select(func.count()).select_from(audit_nodes))).scalar()
    assert nodes == sum(37 >> level for level in range(1, 6))
    with pytest.raises(ValueError, match="beyond"):
        await log.inclusion_proof(0, 38)
    with pytest.raises(ValueError, match="not an RFC 9162 subtree"):
        await log.subtree_root(3, 7)


async def test_unserialisable_record_fails_alone(fresh: Database) -> None:
    log = AuditLog(fresh.engine, make_settings(), SIGNER)
    results = await asyncio.gather(
        log.append(new_record("decision", n=1)),
        log.append(new_record("decision", n=2**60)),
        log.append(new_record("decision", n=3)),
        return_exceptions=True,
    )
    assert isinstance(results[1], RecordError)
    assert sorted(r.index for r in results if not isinstance(r, BaseException)) == [0, 1]
    assert len(await stored(fresh)) == 2


async def test_concurrent_appends_share_commits(fresh: Database) -> None:
    log = AuditLog(fresh.engine, make_settings(), SIGNER)
    receipts = await asyncio.gather(*(log.append(new_record("call.outcome", n=i)) for i in range(200)))
    assert sorted(r.index for r in receipts) == list(range(200))
    assert len({r.index for r in receipts}) == 200
    assert log.commits < 200, "group commit: one transaction must serve many appends"
    entries = await stored(fresh)
    for receipt in receipts:
        assert leaf_hash(entries[receipt.index]) == receipt.leaf_hash
    await check_log(fresh, log)


async def test_batches_are_capped_at_batch_max(fresh: Database) -> None:
    log = AuditLog(fresh.engine, make_settings(batch_max=8), SIGNER)
    await asyncio.gather(*(log.append(new_record("call.outcome", n=i)) for i in range(64)))
    assert log.commits >= 8
    await check_log(fresh, log)


async def test_checkpoints_every_n_records_and_on_stop(fresh: Database) -> None:
    log = ObservedLog(fresh.engine, make_settings(checkpoint_every=10), SIGNER)
    await log.start()
    assert await checkpoints(fresh) == []  # start appends and signs nothing on an empty log
    for i in range(10):
        await log.append(new_record("decision", n=i))
    await wait_for_checkpoint(log, 10)
    for i in range(10):
        await log.append(new_record("decision", n=i))
    await wait_for_checkpoint(log, 20)
    begun = log.rounds_begun
    for i in range(5):
        await log.append(new_record("decision", n=i))
    # The writer decides whether a checkpoint is due before it resolves an append, and a round begins by taking that
    # decision: 5 < checkpoint_every and the interval is an hour, so neither may have happened.
    assert not log.checkpoint_due() and log.rounds_begun == begun
    assert [c.checkpoint.size for c in await checkpoints(fresh)] == [10, 20]
    await log.stop()
    assert [c.checkpoint.size for c in await checkpoints(fresh)] == [10, 20, 25]
    latest = await log.latest_checkpoint()
    assert latest is not None and latest.checkpoint.size == 25
    twenty = await log.checkpoint(20)
    assert twenty is not None and twenty.checkpoint.size == 20 and await log.checkpoint(21) is None
    # Nothing grew: neither a restart nor a stop signs again.
    again = ObservedLog(fresh.engine, make_settings(checkpoint_every=10, checkpoint_interval_ms=20), SIGNER)
    await again.start()
    await again.rounds(3)
    await again.stop()
    assert [c.checkpoint.size for c in await checkpoints(fresh)] == [10, 20, 25]
    with pytest.raises(AuditUnavailable):
        await again.append(new_record("decision"))  # stopped
    await check_log(fresh, log)


async def test_checkpoints_on_the_interval_only_when_grown(fresh: Database) -> None:
    log = ObservedLog(fresh.engine, make_settings(checkpoint_interval_ms=50), SIGNER)
    await log.start()
    try:
        await log.rounds(3)
        assert await checkpoints(fresh) == []  # empty log: nothing to sign
        # One batch, so that no interval falls between the three appends.
        await asyncio.gather(*(log.append(new_record("decision", n=i)) for i in range(3)))
        await wait_for_checkpoint(log, 3)
        await log.rounds(3)  # intervals with no growth
        assert [c.checkpoint.size for c in await checkpoints(fresh)] == [3]
        await log.append(new_record("decision", n=3))
        await wait_for_checkpoint(log, 4)
    finally:
        await log.stop()
    assert [c.checkpoint.size for c in await checkpoints(fresh)] == [3, 4]
    await check_log(fresh, log)


async def test_two_instances_on_two_engines_form_one_log(fresh: Database) -> None:
    """Two replicas sharing the database: the sequencer lock interleaves them into one consistent log."""
    other = Database(fresh.url)
    first = AuditLog(fresh.engine, make_settings(checkpoint_every=15, batch_max=16), SIGNER)
    second = AuditLog(other.engine, make_settings(checkpoint_every=15, batch_max=16), SIGNER)
    try:
        await first.start()
        await second.start()

        async def burst(log: AuditLog, who: str) -> list[int]:
            indexes: list[int] = []
            for round_ in range(6):
                receipts = await asyncio.gather(
                    *(log.append(new_record("admin.action", who=who, n=round_ * 20 + i)) for i in range(20))
                )
                indexes += [r.index for r in receipts]
                # Each replica also signs between its rounds (not left to the background task's timing), so
                # checkpoints signed by both, of heads the other replica moved, must all be consistent.
                await log.sign_checkpoint()
            return indexes

        a, b = await asyncio.gather(burst(first, "a"), burst(second, "b"))
        await first.stop()
        await second.stop()
    finally:
        await other.dispose()
    assert sorted(a + b) == list(range(240))
    entries = await stored(fresh)
    for index in a:
        assert parse_record(entries[index])["who"] == "a"
    for index in b:
        assert parse_record(entries[index])["who"] == "b"
    # Both wrote: the interleaving is real, not one replica doing all the work.
    assert first.commits > 0 and second.commits > 0
    signed = await checkpoints(fresh)
    assert len(signed) >= 3 and signed[-1].checkpoint.size == 240
    await check_log(fresh, first)  # every checkpoint consistent with the next, proofs verify


async def test_a_failing_database_fails_the_batch_and_stores_nothing(fresh: Database) -> None:
    log = AuditLog(fresh.engine, make_settings(), SIGNER)
    await log.append(new_record("decision", n=0))
    # A real failure mid-transaction: the node table disappears, so the leaf insert succeeds and the node insert
    # (leaf 1 completes the subtree [0, 2)) fails; the whole transaction must roll back.
    async with fresh.engine.begin() as conn:
        await conn.execute(text("ALTER TABLE audit_nodes RENAME TO audit_nodes_gone"))
    try:
        results = await asyncio.gather(
            *(log.append(new_record("decision", n=i)) for i in range(1, 6)), return_exceptions=True
        )
        assert all(isinstance(r, AuditUnavailable) for r in results), results
        assert await stored(fresh) != [] and len(await stored(fresh)) == 1
        assert await log.root() == (1, leaf_hash((await stored(fresh))[0]))
    finally:
        async with fresh.engine.begin() as conn:
            await conn.execute(text("ALTER TABLE audit_nodes_gone RENAME TO audit_nodes"))
    # The database is back: the same writer serves new appends, continuing at index 1.
    receipts = await asyncio.gather(*(log.append(new_record("decision", n=i)) for i in range(1, 6)))
    assert sorted(r.index for r in receipts) == [1, 2, 3, 4, 5]
    await log.stop()
    await check_log(fresh, log)


async def test_an_unreachable_database_raises_audit_unavailable(fresh: Database, tmp_path: Path) -> None:
    # A database that cannot be opened at all (a file in a missing directory, on SQLite; a database that does not
    # exist, on PostgreSQL): every append fails closed, and the writer goes on serving (and failing) later ones.
    if fresh.is_sqlite:
        engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'deputy.db'}")
    else:
        engine = create_async_engine(fresh.url.rsplit("/", 1)[0] + "/no_such_database_here")
    try:
        log = AuditLog(engine, make_settings(), SIGNER)
        for _ in range(2):
            with pytest.raises(AuditUnavailable):
                await log.append(new_record("decision"))
    finally:
        await engine.dispose()
