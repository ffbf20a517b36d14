"""Verify an export (:mod:`deputy.audit.export`) offline, with only the log's public key (and witness keys).

An export is JSON Lines: a header (``format``, ``origin``, ``vkey``, ``size``), then leaf lines ``{"index": i,
"record": {...}}`` (or ``"entry"``: base64 bytes, for an entry that is not a canonical record; the leaf bytes are
the RFC 8785 canonical JSON of the record), with a checkpoint line ``{"checkpoint": note, "consistency": {"from":
size, "proof": [...]}}`` after the leaf that completes each checkpoint. Every leaf is re-hashed and the tree rebuilt
(:class:`deputy.audit.verify.tree.Tree`); every checkpoint's signature, root and consistency proof (RFC 9162
§2.1.4.2) from the previous one is checked. Leaves after the last signed checkpoint (beyond ``allow_unsigned``)
and anchors that are not a prefix of the file are problems, as in the database.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any

from deputy import bounded_json
from deputy.audit.checkpoint import Checkpoint, CheckpointError
from deputy.audit.cosignature import CosignatureVerifier
from deputy.audit.log_keys import LogKeys
from deputy.audit.note import NoteError, NoteVerifier, parse_note
from deputy.audit.verify.anchors import Anchor
from deputy.audit.verify.database import BATCH, log_keys
from deputy.audit.verify.record_checks import LineResult, auto_workers, digest_lines, executor
from deputy.audit.verify.report import Problem, Progress, VerifyError, VerifyReport
from deputy.audit.verify.tree import PendingCheckpoint, Tree, position_problem
from deputy.audit.verify.witnesses import check_quorum, valid_cosigners

EXPORT_FORMAT = "deputy-audit-export/v1"


def open_header(line: bytes) -> dict[str, Any]:
    """The header line of an export file; raises ``VerifyError``."""
    try:
        header = bounded_json.loads(line)
    except ValueError:
        header = None
    if not isinstance(header, dict) or header.get("format") != EXPORT_FORMAT:
        raise VerifyError(f"not a {EXPORT_FORMAT} file (the first line is not its header)")
    return header


def _chunks(handle: Any, batch: int) -> Iterator[list[bytes]]:
    chunk: list[bytes] = []
    for line in handle:
        chunk.append(line)
        if len(chunk) >= batch:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def verify_file(
    path: Path,
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
    """Verify an export (:mod:`deputy.audit.export`) offline, with only the log's public key (and witness keys)."""
    started = time.perf_counter()
    keys = log_keys(verifier)
    report = VerifyReport(source=str(path), origin=keys.origin, vkey=keys.vkey())
    tree = Tree(report, keys, collect_nodes=False)
    for anchor in anchors:
        tree.add_anchor(anchor)
    latest: tuple[Checkpoint, str] | None = None
    with path.open("rb") as handle:
        header = open_header(handle.readline())
        if header.get("origin") != keys.origin:
            report.add(Problem("format", f"file is of log {header.get('origin')!r}, the key is for {keys.origin!r}"))
        claimed = header.get("size")
        expected: int = claimed if type(claimed) is int else 0
        report.head_size = expected
        report.workers = auto_workers(workers, expected)
        pool = executor(report.workers)
        pending: deque[tuple[list[bytes], Future[Any] | list[LineResult] | None]] = deque()

        def drain_one() -> None:
            nonlocal latest
            lines, job = pending.popleft()
            if job is None:  # one non-leaf line
                found = _other_line(tree, lines[0])
                # The quorum is judged on the largest checkpoint, whatever order the lines came in.
                if found is not None and (latest is None or found[0].size >= latest[0].size):
                    latest = found
                tree.judge()
                return
            results = job.result() if isinstance(job, Future) else job
            for index, leaf, problem in results:
                position = tree.compact.size
                if index is None or leaf is None:
                    report.add(Problem("format", f"leaf line after leaf {position - 1}: {problem}", index=position))
                    tree.mark(position)
                    tree.shifted = True
                    continue
                if problem is not None:
                    tree.mark(index)
                    report.add(Problem("record", f"leaf {index}: {problem}", index=index, end=index + 1))
                if index != position and not tree.shifted:
                    position_problem(tree, index)
                tree.append(leaf)
            tree.judge()
            if progress is not None:
                progress(tree.compact.size, max(expected, tree.compact.size))

        try:
            for chunk in _chunks(handle, batch):
                leaves: list[bytes] = []
                for line in chunk:
                    if line.startswith(b'{"index":'):
                        leaves.append(line)
                        continue
                    if leaves:
                        pending.append((leaves, _submit(pool, leaves)))
                        leaves = []
                    pending.append(([line], None))
                if leaves:
                    pending.append((leaves, _submit(pool, leaves)))
                while len(pending) > max(4, 4 * report.workers):
                    drain_one()
            while pending:
                drain_one()
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
    tree.finish(allow_unsigned)
    report.latest_checkpoint = latest[0].size if latest is not None else None
    if expected != tree.compact.size:
        report.add(
            Problem(
                "head",
                f"header says size {expected}, the file has {tree.compact.size} leaves",
                index=min(expected, tree.compact.size),
                size=expected,
            )
        )
    if witnesses:
        names: set[str] = set()
        if latest is not None:
            names = valid_cosigners(report, latest[0], latest[1], witnesses)
        check_quorum(report, witnesses, quorum, names)
    report.seconds = time.perf_counter() - started
    return report


def _submit(pool: Executor | None, lines: list[bytes]) -> Future[Any] | list[LineResult]:
    return pool.submit(digest_lines, lines) if pool is not None else digest_lines(lines)


def _other_line(tree: Tree, line: bytes) -> tuple[Checkpoint, str] | None:
    """A checkpoint line (returned when its signature verified), or a line that does not belong."""
    position = tree.compact.size
    try:
        item = bounded_json.loads(line)
    except ValueError as exc:
        tree.report.add(Problem("format", f"line after leaf {position - 1} is not JSON: {exc}", index=position))
        return None
    if isinstance(item, dict) and "index" in item:  # a leaf line spelled differently: still a leaf
        index, leaf, problem = digest_lines([line])[0]
        if index is not None and leaf is not None:
            if problem is not None:
                tree.report.add(Problem("record", f"leaf {index}: {problem}", index=index, end=index + 1))
            if index != position and not tree.shifted:
                position_problem(tree, index)
            tree.append(leaf)
            return None
    if not isinstance(item, dict) or not isinstance(item.get("checkpoint"), str):
        tree.report.add(
            Problem("format", f"line after leaf {position - 1} is neither a leaf nor a checkpoint", index=position)
        )
        return None
    note = item["checkpoint"]
    try:
        size = Checkpoint.parse(parse_note(note).text).size
    except (NoteError, CheckpointError) as exc:
        tree.report.add(
            Problem("checkpoint", f"checkpoint after leaf {position - 1} is malformed: {exc}", index=position)
        )
        return None
    if size != position:
        # The export writes each checkpoint right after its last leaf. One ahead of the leaves would be queued until
        # they come, and could sign leaves placed after a genuine, witnessed checkpoint of a smaller size.
        tree.report.add(Problem("checkpoint", f"checkpoint of size {size} stands after leaf {position - 1}, not "
                                f"after its own last leaf (out of place)", index=position, size=size))
        return None
    consistency = None
    raw = item.get("consistency")
    if isinstance(raw, dict):
        try:
            proof = [base64.b64decode(p, validate=True) for p in raw.get("proof", [])]
            consistency = (int(raw["from"]), proof)
        except (binascii.Error, ValueError, KeyError, TypeError):
            tree.report.add(
                Problem("consistency", f"checkpoint at size {size}: malformed consistency proof", size=size)
            )
    cp = PendingCheckpoint(size, note, consistency=consistency)
    tree.add_checkpoint(cp)
    tree.report.latest_checkpoint = size
    return (cp.checkpoint, note) if cp.checkpoint is not None else None


