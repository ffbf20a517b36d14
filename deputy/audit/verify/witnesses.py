"""Witness checks of a verification (C2SP tlog-witness, tlog-cosignature).

In the database, every stored cosignature from a given witness must verify over the stored checkpoint of its size
(a rewritten, re-signed log no longer matches what the witnesses saw); in an export, the cosignature lines on the
latest checkpoint are checked. Either way the latest checkpoint needs ``quorum`` valid cosignatures from distinct
given witnesses. Stored cosignatures are the log's own copy and can be deleted with the log; what a witness holds
itself is checked as an anchor (:mod:`deputy.audit.verify.anchors`).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from deputy.audit.checkpoint import Checkpoint
from deputy.audit.cosignature import CosignatureVerifier
from deputy.audit.note import NoteError, parse_note
from deputy.audit.verify.report import Problem, VerifyReport
from deputy.storage.tables import audit_checkpoints, audit_cosignatures


async def check_stored_cosignatures(
    conn: AsyncConnection, report: VerifyReport, witnesses: Sequence[CosignatureVerifier], quorum: int | None
) -> None:
    by_name = {w.name: w for w in witnesses}
    # Read on the verifier's connection: the same snapshot as the leaves.
    rows = (
        await conn.execute(
            select(
                audit_cosignatures.c.size,
                audit_cosignatures.c.witness_name,
                audit_cosignatures.c.line,
                audit_checkpoints.c.note,
            )
            .select_from(
                audit_cosignatures.outerjoin(
                    audit_checkpoints, audit_checkpoints.c.size == audit_cosignatures.c.size
                )
            )
            .where(audit_cosignatures.c.witness_name.in_(list(by_name)))
            .order_by(audit_cosignatures.c.size)
        )
    ).all()
    valid: dict[int, set[str]] = {}
    for row in rows:
        size, name = int(row.size), str(row.witness_name)
        if row.note is None:
            report.add(
                Problem(
                    "cosignature",
                    f"witness {name} cosigned size {size}, but there is no checkpoint of "
                    "that size any more (the log was rewritten or truncated)",
                    size=size,
                )
            )
            continue
        try:
            body = parse_note(str(row.note)).text
            by_name[name].verify_line(body, str(row.line))
        except NoteError as exc:
            report.add(
                Problem(
                    "cosignature",
                    f"witness {name}'s cosignature on checkpoint {size} does not verify "
                    f"over the stored checkpoint (the log was rewritten or forked): {exc}",
                    size=size,
                )
            )
            continue
        valid.setdefault(size, set()).add(name)
    check_quorum(report, witnesses, quorum, valid.get(report.latest_checkpoint or -1, set()))


def check_quorum(
    report: VerifyReport, witnesses: Sequence[CosignatureVerifier], quorum: int | None, names: set[str]
) -> None:
    report.witnesses = len(witnesses)
    report.quorum = len(witnesses) if quorum is None else quorum
    report.cosigned_by = tuple(sorted(names))
    if report.latest_checkpoint is None:
        if report.quorum:
            report.add(Problem("quorum", "there is no checkpoint for the witnesses to have cosigned"))
        return
    if len(names) < report.quorum:
        report.add(
            Problem(
                "quorum",
                f"latest checkpoint (size {report.latest_checkpoint}) has {len(names)} valid "
                f"cosignatures from the given witnesses, {report.quorum} required",
                size=report.latest_checkpoint,
            )
        )



def valid_cosigners(
    report: VerifyReport, checkpoint: Checkpoint, note: str, witnesses: Sequence[CosignatureVerifier]
) -> set[str]:
    """Given witnesses whose cosignature line on ``note`` verifies; a failing one is a problem."""
    names: set[str] = set()
    try:
        parsed = parse_note(note)
    except NoteError:
        return names
    keys = {(w.name, w.key_id): w for w in witnesses}
    for sig in parsed.signatures:
        witness = keys.get((sig.name, sig.key_id))
        if witness is None:
            continue
        if witness.timestamp_of(parsed.text.encode(), sig.signature) is None:
            report.add(
                Problem(
                    "cosignature",
                    f"witness {sig.name}'s cosignature on checkpoint {checkpoint.size} does not verify",
                    size=checkpoint.size,
                )
            )
            continue
        names.add(sig.name)
    return names
