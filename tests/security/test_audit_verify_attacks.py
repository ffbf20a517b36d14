"""Attacks on the audit log's verification, from an outside review: what verified and should not, and what failed
verification that should not.

Each test failed on the code as reviewed (2026-12-06): an export whose witness quorum was met by an old checkpoint
placed after a forged head; a leaf line hashing one record and showing another; a log re-signed with a retired key
after a rotation; a witness note anyone could spoil by replaying it; a running log reported as rewritten. Every test
runs on its own SQLite file (the weaknesses are in the verifier and the witness, not in a backend).
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import insert

from deputy.audit.checkpoint import Checkpoint, SignedCheckpoint
from deputy.audit.cosignature import CosignatureSigner
from deputy.audit.log import AuditLog
from deputy.audit.merkle import CompactRange, leaf_hash
from deputy.audit.note import NoteSigner, generate_signer_key, parse_note
from deputy.audit.records import canonical
from deputy.audit.rotation import rotate
from deputy.audit.settings import AuditSettings, load_signer
from deputy.audit.verify import AnchorError, verify_database, verify_file
from deputy.audit.verify.anchors import witnessed_checkpoint
from deputy.audit.witness import WitnessStore, witness_app
from deputy.audit.witness_push import store_cosignature
from deputy.storage.db import Database
from deputy.storage.tables import audit_checkpoints
from tests.support import audit_tamper
from tests.support.audit_build import (
    ORIGIN,
    SIGNER,
    build,
    cli,
    export_to,
    make_settings,
    messages,
    record,
    write_config,
)

WITNESS = CosignatureSigner.generate("witness.test/review")
NOW = 1_700_000_000


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = Database(f"sqlite+aiosqlite:///{tmp_path / 'deputy.db'}")
    await database.migrate()
    yield database
    await database.dispose()


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _write(path: Path, items: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(i, separators=(",", ":"), ensure_ascii=False) + "\n" for i in items))


async def _cosign_every_checkpoint(log: AuditLog, sizes: list[int]) -> None:
    """The witness cosigns each genuine checkpoint, and the log keeps the lines (as the pusher would)."""
    for size in sizes:
        signed = await log.checkpoint(size)
        assert signed is not None
        line = WITNESS.cosign(parse_note(signed.note).text, NOW + size)
        await store_cosignature(log.engine, size, WITNESS.name, line)


# 1. Export: the witness quorum is checked on the last checkpoint *in file order*, not on the largest one.


async def test_export_witness_quorum_cannot_be_met_by_an_old_checkpoint_placed_after_a_forged_head(
    db: Database, tmp_path: Path
) -> None:
    """The log key's holder rewrites records 10..49 and signs a new head of size 50, which no witness cosigned.

    In the export, the forged head is placed right after leaf 9 (a checkpoint *ahead* of the leaves is queued, not
    refused), and the genuine, witness-cosigned checkpoint of size 10 right after it. The verifier checks the quorum
    on the last checkpoint line it read (size 10), so `verify --file --key K --witness W` passes a fork the witness
    never saw: the exact attack witnesses exist to stop ("a fork is caught by witnesses that never cosign two
    inconsistent heads").
    """
    log = await build(db, n=50)
    await log.stop()
    await _cosign_every_checkpoint(log, [10, 20, 30, 40, 50])
    genuine = tmp_path / "genuine.jsonl"
    await export_to(log, genuine)
    ok = verify_file(genuine, SIGNER.verifier(), witnesses=[WITNESS.verifier()], quorum=1)
    assert ok.ok, messages(ok)  # the honest export passes with the witness required

    items = _lines(genuine)
    header = items[0]
    leaves = [i for i in items if "index" in i]
    checkpoint_10 = next(i for i in items if "checkpoint" in i and "\n10\n" in i["checkpoint"])
    # The rewrite: every record from 10 on names someone else; tree recomputed, head re-signed with the log's key.
    forged = [dict(leaf) for leaf in leaves]
    for leaf in forged[10:]:
        leaf["record"] = {**leaf["record"], "user": "mallory"}
    compact = CompactRange()
    for leaf in forged:
        compact.append(leaf_hash(canonical(leaf["record"])))
    forged_head = SignedCheckpoint.sign(Checkpoint(ORIGIN, 50, compact.root()), SIGNER).note
    path = tmp_path / "forked.jsonl"
    _write(path, [header, *forged[:10], {"checkpoint": forged_head}, checkpoint_10, *forged[10:]])

    report = verify_file(path, SIGNER.verifier(), witnesses=[WITNESS.verifier()], quorum=1)
    assert not report.ok, (
        "a head of size 50 that no witness cosigned verified with a witness quorum of 1, "
        f"because the quorum was checked on the checkpoint of size {report.latest_checkpoint} "
        f"(signed up to {report.latest_signed}, cosigned by {report.cosigned_by})"
    )


# 2. Export: a leaf line can carry a forged "record" next to the genuine bytes in "entry".


async def test_export_leaf_line_with_both_entry_and_a_forged_record_is_refused(db: Database, tmp_path: Path) -> None:
    """The verifier hashes ``entry`` when it is present and never looks at ``record``; the exporter writes ``entry``
    only for bytes that are *not* a canonical record. A line ``{"index": 5, "record": <forged>, "entry": <base64 of
    the genuine canonical record>}`` therefore verifies, and everyone reading the export (jq, a SIEM import, a
    person) sees the forged record in a file `deputy audit verify --file` called OK."""
    log = await build(db, n=20)
    await log.stop()
    genuine = tmp_path / "genuine.jsonl"
    await export_to(log, genuine)
    items = _lines(genuine)
    line = next(i for i in items if i.get("index") == 5)
    real = canonical(line["record"])
    assert line["record"]["outcome"] == "allow"
    forged_record = {**line["record"], "outcome": "deny", "tool": "add"}
    items[items.index(line)] = {"index": 5, "record": forged_record, "entry": base64.b64encode(real).decode()}
    path = tmp_path / "edited.jsonl"
    _write(path, items)
    assert _lines(path)[6]["record"]["outcome"] == "deny"  # what a reader of the file sees for record 5

    report = verify_file(path, SIGNER.verifier())
    assert not report.ok, "record 5 reads 'deny' in the file, the log says 'allow', and the export verified"


# 3. Key rotation: the verifier never checks that the key chain it followed ends at the log's current key.


async def test_verify_refuses_a_log_resigned_with_the_retired_key_after_a_rotation(
    db: Database, tmp_path: Path
) -> None:
    """The key was rotated (perhaps because it leaked): K1 -> K2 at size 21, then 10 records under K2. Whoever holds
    the retired K1 and can write the database rewrites the records after the rotation, drops the hand-over and the
    checkpoints after size 20, and signs the new head with K1. `deputy audit verify` starts the chain from the oldest
    key of the history (K1) and follows whatever the database holds: no hand-over, so K1 stays valid, and the
    rewrite verifies — although the key files it reads say the chain is K1 -> K2 and K2 signs now. That is what
    rotation promises to prevent ("a retired key ... can no longer sign checkpoints that anyone following the chain
    accepts"). The checkpoint the auditor kept before the rotation is still a prefix, so even with it the report
    says OK, "1 of 1 anchors"."""
    old = NoteSigner.from_key(generate_signer_key(ORIGIN))
    key_file = tmp_path / "audit.key"
    key_file.write_text(old.key_string() + "\n")
    settings = AuditSettings(origin=ORIGIN, key_file=key_file, checkpoint_every=1000, checkpoint_interval_ms=3_600_000)
    log = AuditLog(db.engine, settings, old)
    await build(db, n=20, log=log)
    await log.stop()
    config = write_config(tmp_path, db.url, key_file)
    kept = await cli("checkpoint", "-c", str(config))  # an auditor keeps the latest checkpoint, as advised
    assert kept.exit_code == 0 and kept.output.startswith(f"{ORIGIN}\n20\n"), kept.output
    trusted = tmp_path / "kept-20.txt"
    trusted.write_text(kept.output)
    await rotate(db.engine, settings)
    new = load_signer(settings)
    log = AuditLog(db.engine, settings, new)
    await build(db, n=10, log=log)  # records 21..30, checkpoint 31 signed by K2 alone
    await log.stop()
    honest = await cli("verify", "-c", str(config), "--trusted", str(trusted))
    assert honest.exit_code == 0 and "followed through 1 hand-overs" in honest.output, honest.output

    # The attacker: K1 and write access to the database. Records 20.. rewritten (the key.rotated record gone too).
    entries = await audit_tamper.entries(db)
    rewritten = entries[:20] + [e.replace(b'"alice"', b'"mallory"') for e in entries[21:]]
    await audit_tamper.rebuild(db, rewritten)
    await audit_tamper.drop_checkpoints_above(db, 20)
    compact = CompactRange()
    for e in rewritten:
        compact.append(leaf_hash(e))
    forged = SignedCheckpoint.sign(Checkpoint(ORIGIN, compact.size, compact.root()), old)
    async with db.engine.begin() as conn:
        await conn.execute(
            insert(audit_checkpoints).values(size=compact.size, root=compact.root(), note=forged.note, created_at=0)
        )

    result = await cli("verify", "-c", str(config), "--trusted", str(trusted))
    assert result.exit_code == 1, (
        "a log rewritten after the rotation and signed with the retired key verified OK:\n" + result.output
    )


# 4. Witness: anyone can make the witness serve a note that no verifier accepts as its anchor.


async def test_witness_checkpoint_stays_a_usable_anchor_after_someone_replays_it(db: Database, tmp_path: Path) -> None:
    """`add-checkpoint` stores the request's note verbatim plus the new cosignature, and `GET /checkpoint` serves it.
    Anyone who can reach the witness (it needs no credential: only a log-signed checkpoint, which the witness itself
    serves) posts back the note it just fetched. Same size, same root: accepted, and the stored note now carries two
    cosignature lines from the witness's key. The verifier opens it with the witness key (`verify_note`), which
    refuses a second signature from one key, so `deputy audit verify --witness 'URL VKEY'` can no longer use this
    witness at all (exit 1, "does not carry a valid cosignature of the witness") until the log's next push; the
    attacker repeats after each push. A junk line named like the witness does the same."""
    log = await build(db, n=10)
    await log.stop()
    latest = await log.latest_checkpoint()
    assert latest is not None
    store = WitnessStore(f"sqlite+aiosqlite:///{tmp_path / 'witness.db'}")
    await store.create()
    app = witness_app(store, WITNESS, {ORIGIN: [SIGNER.verifier()]}, clock=lambda: NOW)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://witness") as client:
            assert (await client.post("/add-checkpoint", content=f"old 0\n\n{latest.note}")).status_code == 200
            served = (await client.get("/checkpoint", params={"origin": ORIGIN})).text
            witnessed_checkpoint(served, WITNESS.verifier(), "witness")  # usable as an anchor now

            # The attacker: no key, no account; just the note the witness serves, posted back.
            await client.post("/add-checkpoint", content=f"old 10\n\n{served}")
            after = (await client.get("/checkpoint", params={"origin": ORIGIN})).text
    finally:
        await store.close()
    try:
        anchor = witnessed_checkpoint(after, WITNESS.verifier(), "witness")
    except AnchorError as exc:
        pytest.fail(f"after a replay by anyone, the witness's checkpoint is no anchor any more: {exc}")
    report = await verify_database(db.engine, SIGNER.verifier(), anchors=[anchor])
    assert report.ok, messages(report)


# 5. Verifying a running log: records appended while it reads are reported as tampering.


async def test_verify_of_a_running_log_does_not_report_records_appended_meanwhile(db: Database) -> None:
    """`deputy audit verify` is meant for a running Deputy (`--allow-unsigned`: "a running one leaves up to about
    checkpoint_every"). It reads the head first, then every leaf that exists when each batch is read, with no upper
    bound and no snapshot: a record appended meanwhile is reported as "leaf 50 and on are beyond the head" — the
    very finding a database rewrite produces — on a log nobody touched."""
    await (await build(db, n=50)).stop()
    appended = threading.Event()

    async def append_one() -> None:
        other = Database(db.url)
        try:
            writer = AuditLog(other.engine, make_settings(), SIGNER)
            await writer.append(record(50))
            await writer.stop()
        finally:
            await other.dispose()

    def progress(done: int, total: int) -> None:
        if not appended.is_set():  # Deputy appends one record while the verifier is on its first batches
            appended.set()
            thread = threading.Thread(target=lambda: asyncio.run(append_one()))
            thread.start()
            thread.join()

    report = await verify_database(db.engine, SIGNER.verifier(), allow_unsigned=100, batch=10, progress=progress)
    assert appended.is_set()
    assert report.ok, messages(report)

