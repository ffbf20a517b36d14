"""Streaming JSON Lines export of the audit log, verifiable offline (:func:`deputy.audit.verify.verify_file`).

Line 1, the header: ``{"format": "deputy-audit-export/v1", "origin": ..., "vkey": <the log's verifier key>,
"size": <leaves exported>}``. Then one line per leaf, in index order, ``{"index": i, "record": <the record>}``:
the stored bytes are canonical JSON and are written as they are, so re-canonicalising the parsed record gives the
leaf bytes back. Stored bytes that are not a canonical version-1 record (which verification reports) are written as
``{"index": i, "entry": <base64 of the bytes>, "problem": ...}`` so the file still hashes to the same tree. After
the leaf that brings the tree to a checkpoint's size comes ``{"checkpoint": <signed note, with any witness
cosignature lines>, "consistency": {"from": <previous checkpoint size>, "proof": [base64 hashes]}}`` (no
``consistency`` on the first checkpoint).

The export is a snapshot of the head read at its start: later appends are not included. Leaves are read in batches
(:meth:`AuditLog.leaves`) and written as they come; memory is one batch plus the checkpoint list.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from deputy.audit.log import AuditLog
from deputy.audit.note import b64
from deputy.audit.verify import BATCH, EXPORT_FORMAT, record_problem
from deputy.audit.witness_push import cosigned_note
from deputy.storage.tables import audit_checkpoints, audit_cosignatures


@dataclass
class ExportStats:
    leaves: int = 0
    checkpoints: int = 0
    not_canonical: list[int] = field(default_factory=list)  # indexes written as raw bytes


async def export_jsonl(
    log: AuditLog,
    write: Callable[[str], Any],
    *,
    progress: Callable[[int, int], None] | None = None,
    batch: int = BATCH,
) -> ExportStats:
    """Write the log to ``write`` (called with text chunks, each a whole number of lines)."""
    size = await log.size()
    async with log.engine.connect() as conn:
        checkpoints = [
            (int(r.size), str(r.note))
            for r in await conn.execute(
                select(audit_checkpoints.c.size, audit_checkpoints.c.note)
                .where(audit_checkpoints.c.size <= size)
                .order_by(audit_checkpoints.c.size)
            )
        ]
        cosignatures: dict[int, list[str]] = {}
        for row in await conn.execute(
            select(audit_cosignatures.c.size, audit_cosignatures.c.line)
            .where(audit_cosignatures.c.size <= size)
            .order_by(audit_cosignatures.c.size, audit_cosignatures.c.witness_name)
        ):
            cosignatures.setdefault(int(row.size), []).append(str(row.line))
    header = {"format": EXPORT_FORMAT, "origin": log.settings.origin, "vkey": log.verifier.vkey(), "size": size}
    write(json.dumps(header, separators=(",", ":")) + "\n")
    stats = ExportStats()
    due = iter(checkpoints)
    next_checkpoint = next(due, None)
    previous = 0
    chunk: list[str] = []
    async for index, entry in log.leaves(0, size, batch=batch):
        problem = record_problem(entry)
        if problem is None:
            chunk.append(f'{{"index":{index},"record":{entry.decode("utf-8")}}}\n')
        else:
            stats.not_canonical.append(index)
            item = {"index": index, "entry": base64.b64encode(entry).decode("ascii"), "problem": problem}
            chunk.append(json.dumps(item, separators=(",", ":")) + "\n")
        stats.leaves += 1
        while next_checkpoint is not None and next_checkpoint[0] == index + 1:
            cp_size, note = next_checkpoint
            line: dict[str, Any] = {"checkpoint": cosigned_note(note, cosignatures.get(cp_size, []))}
            if previous:
                proof = await log.consistency_proof(previous, cp_size)
                line["consistency"] = {"from": previous, "proof": [b64(h) for h in proof]}
            chunk.append(json.dumps(line, separators=(",", ":"), ensure_ascii=False) + "\n")
            stats.checkpoints += 1
            previous = cp_size
            next_checkpoint = next(due, None)
        if len(chunk) >= batch:
            write("".join(chunk))
            chunk = []
            if progress is not None:
                progress(stats.leaves, size)
    if chunk:
        write("".join(chunk))
    if progress is not None:
        progress(stats.leaves, size)
    return stats
