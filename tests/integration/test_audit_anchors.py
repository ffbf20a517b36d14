"""Verification relative to what a database writer cannot rewrite (issue 11, finding 1), on both backends.

Each tamper below needs no key: records changed, deleted (the later ones renumbered), or cut back, every tree node
and the head recomputed, and the checkpoints (and cosignatures) that would give it away deleted. Each one verified
"OK" before; now each fails, naming the first bad index or the anchor it contradicts: records after the latest
signed checkpoint are named, and a trusted checkpoint (kept from ``deputy audit checkpoint``) or a witness's latest
cosigned checkpoint (fetched from the witness) must be a prefix of the log.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import httpx
import pytest
from aiohttp.abc import AbstractResolver
from sqlalchemy import update

from deputy.audit.checkpoint import Checkpoint, SignedCheckpoint
from deputy.audit.cosignature import CosignatureSigner
from deputy.audit.log import AuditLog
from deputy.audit.note import NoteSigner, generate_signer_key
from deputy.audit.verify import Anchor, fetch_witnessed, trusted_checkpoint, verify_database, verify_file
from deputy.audit.witness import WitnessStore, witness_app
from deputy.audit.witness_push import WitnessPusher
from deputy.storage.db import Database
from deputy.storage.tables import audit_checkpoints
from tests.support.audit_build import (
    EVERY,
    ORIGIN,
    SIGNER,
    WITNESS_URL,
    N,
    build,
    clear,
    export_to,
    make_settings,
    messages,
)
from tests.support.audit_tamper import edit, remove, truncate, wipe
from tests.support.local_http import pointing, serving

Tamper = Callable[[Database], Awaitable[None]]


async def edit_23(db: Database) -> None:
    await edit(db, 23, b'"alice"', b'"mallory"')


async def remove_23(db: Database) -> None:
    await remove(db, 23)


async def truncate_to_30(db: Database) -> None:
    await truncate(db, 30)


@pytest.fixture
async def fresh(db: Database) -> AsyncIterator[Database]:
    await clear(db)
    yield db


async def latest_note(db: Database) -> str:
    signed = await AuditLog(db.engine, make_settings(), SIGNER).latest_checkpoint()
    assert signed is not None
    return signed.note


def kept(note: str) -> Anchor:
    return trusted_checkpoint(note, "trusted checkpoint")


# Without an anchor: the records no signed checkpoint covers are named


@pytest.mark.parametrize(
    ("tamper", "unsigned"), [(edit_23, "leaves 20..49 (30 records)"), (remove_23, "leaves 20..48 (29 records)")]
)
async def test_a_rewrite_with_its_checkpoints_deleted_names_the_unsigned_records(
    fresh: Database, tamper: Tamper, unsigned: str
) -> None:
    await build(fresh)
    await tamper(fresh)
    report = await verify_database(fresh.engine, SIGNER.verifier())
    assert not report.ok, "a keyless rewrite verified"
    assert [p.kind for p in report.problems] == ["unsigned"], messages(report)
    assert report.first_bad_index == 20
    assert report.problems[0].message.startswith(f"{unsigned} are not covered by a signed checkpoint")
    # A running Deputy leaves up to about checkpoint_every records unsigned: that many can be allowed explicitly.
    assert (await verify_database(fresh.engine, SIGNER.verifier(), allow_unsigned=30)).ok


async def test_a_clean_log_has_no_unsigned_records_and_an_unsigned_append_is_named(fresh: Database) -> None:
    log = await build(fresh)
    report = await verify_database(fresh.engine, SIGNER.verifier())
    assert report.ok and (report.latest_signed, report.unsigned) == (N, 0)
    await log.append({"v": 1, "type": "admin.action", "id": "x" * 32, "time": 1})
    report = await verify_database(fresh.engine, SIGNER.verifier())
    assert [p.message.split(" (")[0] for p in report.problems] == [f"leaf {N}"]
    assert report.first_bad_index == N


# A trusted checkpoint: the log must extend it


async def test_the_honest_log_extends_a_trusted_checkpoint(fresh: Database) -> None:
    log = await build(fresh, n=30)
    older = kept(await latest_note(fresh))
    await build(fresh, n=20, log=log)
    report = await verify_database(fresh.engine, SIGNER.verifier(), anchors=[older, kept(await latest_note(fresh))])
    assert report.ok, messages(report)
    assert (report.anchors, report.anchors_ok) == (2, 2)


@pytest.mark.parametrize(
    ("tamper", "expected", "index"),
    [
        (edit_23, "trusted checkpoint (size 50) is not a prefix of the log", 20),
        (remove_23, "trusted checkpoint has size 50, but the log has only 49 leaves: leaf 49 was removed", 20),
        (truncate_to_30, "trusted checkpoint has size 50, but the log has only 30 leaves: leaves 30..49", 30),
        (wipe, "trusted checkpoint has size 50, but the log is empty", 0),
    ],
)
async def test_each_keyless_tamper_contradicts_the_trusted_checkpoint(
    fresh: Database, tamper: Tamper, expected: str, index: int
) -> None:
    await build(fresh)
    trusted = kept(await latest_note(fresh))
    await tamper(fresh)
    report = await verify_database(fresh.engine, SIGNER.verifier(), anchors=[trusted], allow_unsigned=N)
    assert not report.ok
    anchor = [p for p in report.problems if p.kind == "anchor"]
    assert len(anchor) == 1 and anchor[0].message.startswith(expected), messages(report)
    assert anchor[0].index == index
    assert report.first_bad_index == index


async def test_a_checkpoint_signed_by_an_unknown_key_is_refused(fresh: Database) -> None:
    await build(fresh)
    stranger = NoteSigner.from_key(generate_signer_key(ORIGIN))  # same origin, another key
    signed = SignedCheckpoint.open(await latest_note(fresh), [SIGNER.verifier()])
    forged = SignedCheckpoint.sign(Checkpoint(ORIGIN, N, signed.checkpoint.root), stranger).note
    report = await verify_database(fresh.engine, SIGNER.verifier(), anchors=[kept(forged)])
    assert [p.kind for p in report.problems] == ["anchor"]
    assert "trusted checkpoint is not signed by the log's key" in report.problems[0].message
    async with fresh.engine.begin() as conn:
        await conn.execute(update(audit_checkpoints).where(audit_checkpoints.c.size == N).values(note=forged))
    report = await verify_database(fresh.engine, SIGNER.verifier())
    assert "checkpoint at size 50: signature does not verify: note has no signature from a known key" in messages(
        report
    )


# An export verified offline


async def test_an_export_rewritten_without_the_key_fails(fresh: Database, tmp_path: Path) -> None:
    log = await build(fresh)
    trusted = kept(await latest_note(fresh))
    path = tmp_path / "audit.jsonl"
    await export_to(log, path)
    lines = path.read_text().splitlines()
    header = json.loads(lines[0])
    kept_lines = []
    for line in lines[1:]:
        item = json.loads(line)
        if "checkpoint" in item and Checkpoint.parse(item["checkpoint"].split("\n\n")[0] + "\n").size > 20:
            continue  # the checkpoints that cover the edit
        if item.get("index") == 23:
            item["record"]["user"] = "mallory"
        kept_lines.append(json.dumps(item))
    forged = tmp_path / "forged.jsonl"
    forged.write_text("\n".join([json.dumps(header), *kept_lines]) + "\n")

    report = verify_file(forged, SIGNER.verifier())
    assert [p.kind for p in report.problems] == ["unsigned"] and report.first_bad_index == 20, messages(report)
    report = verify_file(forged, SIGNER.verifier(), anchors=[trusted], allow_unsigned=N)
    assert [p.kind for p in report.problems] == ["anchor"] and report.first_bad_index == 20, messages(report)
    assert verify_file(path, SIGNER.verifier(), anchors=[trusted]).ok


# A witness: its latest cosigned checkpoint, fetched from it


@pytest.fixture
async def witness(url: str) -> AsyncIterator[tuple[CosignatureSigner, AbstractResolver, int]]:
    """The witness app served on loopback; the resolver sends WITNESS_URL's host to its port."""
    store = await WitnessStore.open(url)
    cosigner = CosignatureSigner.generate("witness.test/w1")
    async with store.engine.begin() as conn:
        for table in ("witness_heads", "witness_checkpoints", "witness_log_keys"):
            await conn.exec_driver_sql(f"DELETE FROM {table}")
    async with serving(witness_app(store, cosigner, {ORIGIN: [SIGNER.verifier()]})) as port:
        yield cosigner, pointing(WITNESS_URL, port), port
    await store.close()


async def test_truncating_to_the_witnessed_size_fails_against_the_witness(
    fresh: Database, witness: tuple[CosignatureSigner, AbstractResolver, int]
) -> None:
    cosigner, resolver, port = witness
    log = AuditLog(fresh.engine, make_settings(), SIGNER)
    log.after_checkpoint.append(WitnessPusher(log, [(WITNESS_URL, cosigner.verifier().vkey())], resolver=resolver))
    await build(fresh, n=N + EVERY, log=log)
    await log.stop()

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        served = await client.get("/checkpoint", params={"origin": ORIGIN})
        assert served.status_code == 200 and served.text.startswith(f"{ORIGIN}\n60\n")
        assert (await client.get("/checkpoint", params={"origin": "other.test/log"})).status_code == 404

    async def anchored() -> list[Anchor]:
        return [await fetch_witnessed(WITNESS_URL, cosigner.verifier(), ORIGIN, resolver=resolver)]

    assert (await verify_database(fresh.engine, SIGNER.verifier(), anchors=await anchored())).ok

    await truncate(fresh, N)  # a size the witness cosigned too; checkpoint 60 and its cosignature deleted
    stored_only = await verify_database(fresh.engine, SIGNER.verifier(), witnesses=[cosigner.verifier()], quorum=1)
    assert stored_only.ok, "the log's own copy of the cosignatures cannot tell: " + messages(stored_only)
    report = await verify_database(
        fresh.engine, SIGNER.verifier(), witnesses=[cosigner.verifier()], quorum=1, anchors=await anchored()
    )
    assert [p.kind for p in report.problems] == ["anchor"], messages(report)
    assert report.problems[0].message.startswith(
        f"witness {cosigner.name}'s latest cosigned checkpoint has size 60, but the log has only 50 leaves"
    )
    assert report.first_bad_index == N
