"""Whole-log verification on both backends: a clean log verifies; each way of tampering with the stored log (an
edited record, a deleted, inserted or swapped row, a truncated tail, a rewritten and re-signed log) is caught and
located; witnesses cosign through the real witness app. Offline proofs, exports and the command line are in
``test_audit_proofs.py``; keyless rewrites and anchors in ``test_audit_anchors.py``.
"""

from __future__ import annotations

import errno
from collections.abc import AsyncIterator

import pytest
from aiohttp.abc import AbstractResolver
from sqlalchemy import delete, insert, select, update

from deputy.audit.bundle import check_bundle, make_bundle
from deputy.audit.cosignature import CosignatureSigner
from deputy.audit.log import AuditLog
from deputy.audit.merkle import CompactRange, leaf_hash
from deputy.audit.note import NoteSigner, generate_signer_key
from deputy.audit.records import canonical
from deputy.audit.verify import verify_database
from deputy.audit.witness import WitnessStore, witness_app
from deputy.audit.witness_push import WitnessPusher, stored_cosignatures
from deputy.storage.db import Database
from deputy.storage.tables import audit_checkpoints, audit_cosignatures, audit_head, audit_leaves, audit_nodes
from tests.support.audit_build import (
    EVERY,
    ORIGIN,
    SIGNER,
    VKEY,
    WITNESS_URL,
    N,
    build,
    entry,
    fresh,
    make_settings,
    messages,
    record,
    set_entry,
    verify,
)
from tests.support.local_http import pointing, serving

__all__ = ["fresh"]


# The clean log


async def test_a_clean_log_verifies(fresh: Database) -> None:
    await build(fresh)
    report = await verify(fresh)
    assert report.ok, messages(report)
    assert (report.leaves, report.head_size, report.checkpoints, report.checkpoints_ok) == (N, N, 5, 5)
    assert report.latest_checkpoint == N
    assert report.nodes_checked == sum(N >> level for level in range(1, 6))
    # The same through worker processes, in small batches (several batches, node ranges across their edges).
    parallel = await verify(fresh, workers=2, batch=8)
    assert parallel.ok, messages(parallel)
    assert (parallel.workers, parallel.leaves, parallel.checkpoints_ok, parallel.nodes_checked) == (
        2,
        N,
        5,
        report.nodes_checked,
    )
    assert parallel.root == report.root


async def test_a_wrong_key_fails_every_checkpoint(fresh: Database) -> None:
    await build(fresh)
    other = NoteSigner.from_key(generate_signer_key(ORIGIN))
    report = await verify_database(fresh.engine, other.verifier())
    assert not report.ok
    assert sum("signature does not verify" in p.message for p in report.problems) == 5


# Tampering in the database


async def test_an_edited_field_is_located(fresh: Database) -> None:
    await build(fresh)
    original = await entry(fresh, 23)
    tampered = original.replace(b'"alice"', b'"mallory"')
    assert tampered != original
    await set_entry(fresh, 23, tampered)  # still a canonical record: only the tree can tell
    report = await verify(fresh)
    assert not report.ok
    first = report.first_problem
    assert first is not None and first.kind == "record" and (first.index, first.end) == (22, 24)
    assert "leaf 22 or 23: record bytes do not match" in first.message
    assert report.first_bad_index == 22
    assert (
        "checkpoint at size 30: root differs from the records (first divergence at or before leaf 23, after "
        "leaf 19)" in messages(report)
    )
    assert report.checkpoints_ok == 2  # 10 and 20 are before the edit


async def test_a_non_canonical_edit_names_the_leaf(fresh: Database) -> None:
    await build(fresh)
    await set_entry(fresh, 7, (await entry(fresh, 7)).replace(b'"n":7', b'"n": 7'))
    report = await verify(fresh)
    problems = [p for p in report.problems if p.index == 7 and p.end == 8]
    assert problems and "leaf 7: audit entry is not in canonical form" in problems[0].message
    assert report.first_bad_index == 6 or report.first_bad_index == 7


async def test_a_deleted_row_is_named(fresh: Database) -> None:
    await build(fresh)
    async with fresh.engine.begin() as conn:
        await conn.execute(delete(audit_leaves).where(audit_leaves.c.idx == 17))
    report = await verify(fresh)
    first = report.first_problem
    assert first is not None and first.kind == "missing" and first.message == "leaf index 17 missing"
    assert report.first_bad_index == 17
    assert "head says size 50, only 49 leaves" in messages(report)


async def test_an_inserted_row_is_caught(fresh: Database) -> None:
    await build(fresh)
    # Insert a record at index 31, moving the later ones up by one.
    async with fresh.engine.begin() as conn:
        rows = (await conn.execute(select(audit_leaves).where(audit_leaves.c.idx >= 31))).all()
        await conn.execute(delete(audit_leaves).where(audit_leaves.c.idx >= 31))
        await conn.execute(
            insert(audit_leaves),
            [{"idx": r.idx + 1, "record": r.record, "created_at": r.created_at} for r in rows]
            + [{"idx": 31, "record": canonical(record(999, "mallory")), "created_at": 0}],
        )
    report = await verify(fresh)
    assert report.first_bad_index == 30  # the level-1 node over leaves 30 and 31
    assert report.leaves == N + 1
    text = messages(report)
    assert "leaf 30 or 31: record bytes do not match" in text
    assert "head says size 50, but there are 51 leaves" in text
    assert "checkpoint at size 40: root differs from the records" in text


async def test_a_row_appended_beyond_the_head_is_caught(fresh: Database) -> None:
    await build(fresh)
    async with fresh.engine.begin() as conn:
        await conn.execute(insert(audit_leaves).values(idx=N, record=canonical(record(N)), created_at=0))
    report = await verify(fresh)
    first = report.first_problem
    assert first is not None and first.kind == "extra" and first.index == N
    assert "head says size 50, but there are 51 leaves (leaf 50 and on are beyond the head)" in first.message


async def test_two_swapped_rows_are_located(fresh: Database) -> None:
    await build(fresh)
    a, b = await entry(fresh, 11), await entry(fresh, 36)
    await set_entry(fresh, 11, b)
    await set_entry(fresh, 36, a)
    report = await verify(fresh)
    located = sorted((p.index, p.end) for p in report.problems if p.kind == "record")
    assert located == [(10, 12), (36, 38)]
    assert report.first_bad_index == 10
    assert (
        "checkpoint at size 20: root differs from the records (first divergence at or before leaf 11, after leaf "
        "9)" in messages(report)
    )
    assert report.checkpoints_ok == 1


async def test_a_truncated_tail_is_caught(fresh: Database) -> None:
    await build(fresh)
    async with fresh.engine.begin() as conn:
        await conn.execute(delete(audit_leaves).where(audit_leaves.c.idx >= 45))
    report = await verify(fresh)
    assert report.leaves == 45
    text = messages(report)
    assert "head says size 50, only 45 leaves" in text
    assert "checkpoint at size 50 is beyond the last leaf (45 leaves)" in text
    assert "tree nodes are stored beyond the last leaf (45 leaves)" in text


async def test_a_truncation_that_rewrites_the_head_is_still_caught(fresh: Database) -> None:
    """Leaves, nodes and head all cut back consistently: the signed checkpoint at 50 still gives it away."""
    await build(fresh)
    compact = CompactRange()
    for i in range(45):
        compact.append(leaf_hash(await entry(fresh, i)))
    async with fresh.engine.begin() as conn:
        await conn.execute(delete(audit_leaves).where(audit_leaves.c.idx >= 45))
        for level in range(1, 7):
            await conn.execute(
                delete(audit_nodes).where(audit_nodes.c.level == level, audit_nodes.c.idx >= 45 >> level)
            )
        await conn.execute(update(audit_head).values(size=45, compact=compact.to_bytes()))
    report = await verify(fresh)
    assert [p.message for p in report.problems] == ["checkpoint at size 50 is beyond the last leaf (45 leaves)"]


# Witnesses


@pytest.fixture
async def witness(url: str) -> AsyncIterator[tuple[CosignatureSigner, AbstractResolver, WitnessStore]]:
    """The witness app served on loopback; the resolver sends WITNESS_URL's host to it."""
    store = await WitnessStore.open(url)
    cosigner = CosignatureSigner.generate("witness.test/w1")
    async with store.engine.begin() as conn:
        await conn.exec_driver_sql("DELETE FROM witness_heads")
    app_ = witness_app(store, cosigner, {ORIGIN: [SIGNER.verifier()]}, clock=lambda: 1_700_000_000)
    async with serving(app_) as port:
        yield cosigner, pointing(WITNESS_URL, port), store
    await store.close()


async def test_witness_push_stores_cosignatures_and_a_rewritten_log_is_caught(
    fresh: Database, witness: tuple[CosignatureSigner, AbstractResolver, WitnessStore]
) -> None:
    cosigner, resolver, store = witness
    wvkey = cosigner.verifier().vkey()
    log = AuditLog(fresh.engine, make_settings(), SIGNER)
    pusher = WitnessPusher(log, [(WITNESS_URL, wvkey)], resolver=resolver)
    log.after_checkpoint.append(pusher)  # as AuditLog.start does when [audit] witnesses are configured
    await build(fresh, log=log)
    await log.stop()  # waits for the pushes in flight
    assert await store.head(ORIGIN) == (N, (await log.root())[1])
    lines = await stored_cosignatures(fresh.engine, N)
    assert [name for name, _ in lines] == [cosigner.name]
    signed = await log.checkpoint(N)
    assert signed is not None
    assert cosigner.verifier().verify_line(signed.checkpoint.body(), lines[0][1]) == 1_700_000_000

    report = await verify(fresh, witnesses=[cosigner.verifier()])
    assert report.ok, messages(report)
    assert (report.cosigned_by, report.quorum) == ((cosigner.name,), 1)
    # A bundle carries the cosignature; offline checking can then require it.
    bundle = (await make_bundle(log, 42)).text()
    assert check_bundle(bundle, VKEY, [wvkey], quorum=1).cosigners == (cosigner.name,)

    # The key holder rewrites the whole log (other records, same key), re-signs it and grows it.
    await clear_log_keep_cosignatures(fresh)
    forged = await build(fresh, n=N + EVERY, user="mallory")
    alone = await verify(fresh)
    assert alone.ok, "without witnesses a re-signed rewrite is self-consistent: " + messages(alone)
    # The witness refuses the rewritten log: not consistent with the head it cosigned.
    latest = await forged.latest_checkpoint()
    assert latest is not None
    results = await WitnessPusher(forged, [(WITNESS_URL, wvkey)], resolver=resolver).push(latest)
    assert [r.status for r in results] == [422] and results[0].line is None
    head = await store.head(ORIGIN)
    assert head is not None and head[0] == N  # the witness still holds the genuine head
    report = await verify(fresh, witnesses=[cosigner.verifier()])
    assert not report.ok
    kinds = {p.kind for p in report.problems}
    assert kinds == {"cosignature", "quorum"}, messages(report)
    text = messages(report)
    assert f"witness {cosigner.name}'s cosignature on checkpoint 50 does not verify over the stored checkpoint" in text
    assert "latest checkpoint (size 60) has 0 valid cosignatures from the given witnesses, 1 required" in text
    # Dropping the witness's rows too only leaves the quorum failure.
    async with fresh.engine.begin() as conn:
        await conn.execute(delete(audit_cosignatures))
    report = await verify(fresh, witnesses=[cosigner.verifier()], quorum=1)
    assert [p.kind for p in report.problems] == ["quorum"]


async def clear_log_keep_cosignatures(db: Database) -> None:
    async with db.engine.begin() as conn:
        for table in (audit_leaves, audit_nodes, audit_checkpoints, audit_head):
            await conn.execute(delete(table))


async def test_a_witness_that_is_down_does_not_block_and_is_retried(
    fresh: Database, witness: tuple[CosignatureSigner, AbstractResolver, WitnessStore]
) -> None:
    cosigner, resolver, store = witness
    wvkey = cosigner.verifier().vkey()
    log = AuditLog(fresh.engine, make_settings(), SIGNER)

    down = WitnessPusher(log, [(WITNESS_URL, wvkey)],
                         resolver=pointing(WITNESS_URL, OSError(errno.EHOSTUNREACH, "witness down")))
    await build(fresh, n=20, log=log)
    first = await log.latest_checkpoint()
    assert first is not None
    results = await down.push(first)
    assert results[0].status is None and "witness down" in (results[0].error or "")
    assert await stored_cosignatures(fresh.engine, 20) == []
    # Back up: the next checkpoint is pushed from old 0 (nothing cosigned yet) and stored.
    await build(fresh, n=10, log=log)
    up = WitnessPusher(log, [(WITNESS_URL, wvkey)], resolver=resolver)
    latest = await log.latest_checkpoint()
    assert latest is not None and latest.checkpoint.size == 30
    assert [r.status for r in await up.push(latest)] == [200]
    assert [n for n, _ in await stored_cosignatures(fresh.engine, 30)] == [cosigner.name]
    # A second pusher (a restart) learns the witness's size from the 409 and continues from it.
    await build(fresh, n=10, log=log)
    again = WitnessPusher(log, [(WITNESS_URL, wvkey)], resolver=resolver)
    async with fresh.engine.begin() as conn:
        await conn.execute(delete(audit_cosignatures))  # forget what was cosigned: old will be 0, the witness has 30
    latest = await log.latest_checkpoint()
    assert latest is not None
    assert [r.status for r in await again.push(latest)] == [200]
    assert await store.head(ORIGIN) == (40, latest.checkpoint.root)


