"""Verify a whole audit log, in the database or in an exported file, from its record bytes up.

What is checked (one pass, leaves streamed in large batches; memory is the batch plus the compact range):

- every leaf: it is present at its index (no gap, nothing beyond the head), and its bytes parse as a canonical
  version-1 record (:func:`deputy.audit.records.parse_record`); its RFC 9162 leaf hash is recomputed from them;
- the tree: rebuilt incrementally (the compact range of :mod:`deputy.audit.merkle`); in the database every stored
  perfect-subtree hash (``audit_nodes``) is compared with the recomputed one, which locates an edited or moved
  record to the two leaves under a level-1 node; nodes stored beyond the last leaf are reported;
- every checkpoint: its signature with the log's public key (a :class:`NoteVerifier`, from the vkey), its origin,
  the size and root columns against the note, and its root against the root recomputed at its size; an exported
  file carries a consistency proof from the previous checkpoint, which is verified too (with every leaf present
  the root checks already imply consistency);
- the head (``audit_head``, or the export header's size) against the number of leaves and the recomputed tree;
- witnesses (when their cosigner vkeys are given): every stored cosignature from them must verify over the stored
  checkpoint at its size (a rewritten, re-signed log no longer matches what the witnesses saw), and the latest
  checkpoint needs ``quorum`` valid cosignatures from distinct given witnesses.

Whoever holds the log's key can rewrite the whole log and re-sign it; only the witness checks catch that.

Record checks are the costly part (~20 µs a record, the JSON parse and re-serialisation); on large logs they run
in worker processes (``workers``), while this process reads, folds the tree and compares nodes. The result is
data (:class:`VerifyReport`), so the command line renders it and tests assert on it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import heapq
import json
import multiprocessing
import os
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from deputy.audit.checkpoint import Checkpoint, CheckpointError
from deputy.audit.cosignature import CosignatureVerifier
from deputy.audit.merkle import EMPTY_ROOT, CompactRange, ProofError, leaf_hash, verify_consistency
from deputy.audit.note import NoteError, NoteVerifier, parse_note, verify_note
from deputy.audit.records import INT_MAX, INT_MIN, RECORD_TYPES, RECORD_VERSION, RecordError, canonical, parse_record
from deputy.storage.tables import audit_checkpoints, audit_cosignatures, audit_head, audit_leaves, audit_nodes

EXPORT_FORMAT = "deputy-audit-export/v1"
BATCH = 32768
MAX_PROBLEMS = 100
PARALLEL_FROM = 100_000  # below this many leaves, starting worker processes costs more than it saves

Progress = Callable[[int, int], None]
"""``progress(leaves done, leaves expected)``."""


class VerifyError(ValueError):
    """The input cannot be verified at all (not an export file, a key of the wrong kind)."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the log. ``index``/``end``: the leaves concerned, ``[index, end)``; ``size``: the tree
    size of the checkpoint or head concerned."""

    kind: str  # record | missing | extra | node | checkpoint | consistency | head | cosignature | quorum | format
    message: str
    index: int | None = None
    end: int | None = None
    size: int | None = None


@dataclass
class VerifyReport:
    source: str
    origin: str
    vkey: str
    leaves: int = 0
    head_size: int | None = None
    root: bytes = EMPTY_ROOT
    checkpoints: int = 0
    checkpoints_ok: int = 0
    latest_checkpoint: int | None = None
    nodes_checked: int = 0
    consistency_proofs: int = 0
    witnesses: int = 0
    quorum: int = 0
    cosigned_by: tuple[str, ...] = ()  # given witnesses with a valid cosignature on the latest checkpoint
    workers: int = 0
    seconds: float = 0.0
    problems: list[Problem] = field(default_factory=list)
    problems_dropped: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems and not self.problems_dropped

    @property
    def first_problem(self) -> Problem | None:
        """Where to start looking: the located problem at the lowest leaf index, preferring the precise ones (a
        record, a node, a missing leaf) over a checkpoint's range; else the first problem found."""
        located = [p for p in self.problems if p.index is not None]
        precise = [p for p in located if p.kind != "checkpoint"] or located
        if precise:
            return min(precise, key=lambda p: p.index if p.index is not None else 0)
        return self.problems[0] if self.problems else None

    @property
    def first_bad_index(self) -> int | None:
        first = self.first_problem
        return first.index if first is not None else None

    @property
    def records_per_second(self) -> float:
        return self.leaves / self.seconds if self.seconds > 0 else 0.0

    def add(self, problem: Problem) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(problem)
        else:
            self.problems_dropped += 1


# Record checks (run in worker processes on large logs: module-level functions, picklable arguments)


class _NotQuick(Exception):
    pass


def _quick_int(text: str) -> int:
    value = int(text)
    if not INT_MIN <= value <= INT_MAX:
        raise _NotQuick
    return value


def _quick_float(text: str) -> float:
    raise _NotQuick


_DECODER = json.JSONDecoder(parse_int=_quick_int, parse_float=_quick_float)
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _quick_canonical(entry: bytes) -> bool:
    """True only if ``entry`` is certainly a canonical v1 record; False means "ask parse_record".

    With ASCII bytes, no floats and every integer within ±(2^53 - 1), a re-serialisation equal to the input proves
    every string was ASCII, so the fast path of :func:`canonical` applies and gives these very bytes.
    """
    if not entry.isascii():
        return False
    try:
        record = _DECODER.decode(entry.decode("ascii"))
        return bool(
            type(record) is dict
            and record.get("v") == RECORD_VERSION
            and type(record.get("v")) is int
            and record.get("type") in RECORD_TYPES
            and _ENCODER.encode(record).encode("ascii") == entry
        )
    except (_NotQuick, ValueError, RecursionError):
        return False


def record_problem(entry: bytes) -> str | None:
    """Why ``entry`` is not a canonical version-1 record, or None."""
    if _quick_canonical(entry):
        return None
    try:
        parse_record(entry)
    except RecordError as exc:
        return str(exc)
    except RecursionError:
        return "record is nested too deeply"
    return None


def _digest_entries(entries: list[bytes]) -> tuple[list[bytes], list[tuple[int, str]]]:
    """Leaf hashes of stored entries, and (offset, problem) for those that are not canonical records."""
    problems: list[tuple[int, str]] = []
    for offset, entry in enumerate(entries):
        problem = record_problem(entry)
        if problem is not None:
            problems.append((offset, problem))
    return [leaf_hash(e) for e in entries], problems


LineResult = tuple[int | None, bytes | None, str | None]  # (claimed index, leaf hash, problem)


def _digest_lines(lines: list[bytes]) -> list[LineResult]:
    """Leaf lines of an export file: ``{"index": i, "record": {...}}`` (or ``"entry"``: base64 bytes, for an
    entry that is not a canonical record). The leaf bytes are the canonical JSON of the record."""
    results: list[LineResult] = []
    for line in lines:
        try:
            item = json.loads(line)
        except (ValueError, RecursionError) as exc:
            results.append((None, None, f"line is not JSON: {exc}"))
            continue
        index = item.get("index") if isinstance(item, dict) else None
        if type(index) is not int or index < 0:
            results.append((None, None, "leaf line has no valid index"))
            continue
        if "entry" in item:  # exported as raw bytes because they were not a canonical record
            try:
                entry = base64.b64decode(str(item["entry"]), validate=True)
            except (binascii.Error, ValueError):
                results.append((index, None, "entry is not base64"))
                continue
            results.append((index, leaf_hash(entry), record_problem(entry)))
            continue
        record = item.get("record")
        try:
            entry = canonical(record)
        except RecordError as exc:
            results.append((index, None, f"record cannot be canonicalised: {exc}"))
            continue
        problem = None
        if not isinstance(record, dict) or record.get("v") != RECORD_VERSION or record.get("type") not in RECORD_TYPES:
            problem = "not a version 1 record of a known type"
        results.append((index, leaf_hash(entry), problem))
    return results


# The tree and the checkpoints, shared by the database and file verifiers


@dataclass
class _Checkpoint:
    size: int
    note: str
    root_column: bytes | None = None  # the database's root column
    size_column: int | None = None
    consistency: tuple[int, list[bytes]] | None = None  # an export's (from size, proof)
    checkpoint: Checkpoint | None = None  # once the signature verified


class _Tree:
    """The recomputed tree, the checkpoints waiting for their size, and the report they feed."""

    def __init__(self, report: VerifyReport, verifier: NoteVerifier, collect_nodes: bool) -> None:
        self.report = report
        self.verifier = verifier
        self.compact = CompactRange()
        self.collect_nodes = collect_nodes
        self.completed: list[tuple[int, int, bytes]] = []  # (level, idx, hash) since the last drain
        self.waiting: list[tuple[int, int, _Checkpoint]] = []  # heap of (size, sequence, checkpoint)
        self.sequence = 0
        self.last_good = 0  # size of the latest checkpoint whose root matched
        self.first_bad: int | None = None  # lowest leaf index known to be wrong
        self.shifted = False  # a leaf is missing or out of place: later positions are all off
        self.verified: list[Checkpoint] = []  # checkpoints whose signature verified, in arrival order
        self.previous_signed: Checkpoint | None = None
        self.due: list[tuple[int, bytes, _Checkpoint]] = []  # (size, recomputed root, checkpoint) to judge

    def mark(self, index: int) -> None:
        """``index``: the last leaf of the earliest place known to be wrong (an upper bound for divergence)."""
        if self.first_bad is None or index < self.first_bad:
            self.first_bad = index

    # Leaves

    def append(self, leaf: bytes) -> None:
        compact = self.compact
        completed = compact.append(leaf)
        if self.collect_nodes and completed:
            self.completed.extend(completed)
        if self.waiting and self.waiting[0][0] == compact.size:
            self._check_due()

    # Checkpoints

    def add_checkpoint(self, cp: _Checkpoint) -> None:
        """Open the note; queue it to be compared with the tree when the tree reaches its size."""
        report = self.report
        report.checkpoints += 1
        try:
            text = verify_note(parse_note(cp.note), [self.verifier]).text
            checkpoint = Checkpoint.parse(text)
        except (NoteError, CheckpointError) as exc:
            report.add(
                Problem("checkpoint", f"checkpoint at size {cp.size}: signature does not verify: {exc}", size=cp.size)
            )
            return
        if checkpoint.origin != self.verifier.name:
            report.add(
                Problem(
                    "checkpoint",
                    f"checkpoint at size {cp.size}: origin {checkpoint.origin!r} is not "
                    f"the log's {self.verifier.name!r}",
                    size=cp.size,
                )
            )
            return
        if checkpoint.size != cp.size or (cp.size_column is not None and cp.size_column != checkpoint.size):
            report.add(
                Problem(
                    "checkpoint",
                    f"checkpoint stored at size {cp.size_column or cp.size} is signed for size {checkpoint.size}",
                    size=cp.size,
                )
            )
            return
        if cp.root_column is not None and cp.root_column != checkpoint.root:
            report.add(
                Problem(
                    "checkpoint",
                    f"checkpoint at size {cp.size}: the stored root column differs from the signed root",
                    size=cp.size,
                )
            )
        cp.checkpoint = checkpoint
        self._check_consistency(cp, checkpoint)
        if checkpoint.size < self.compact.size:
            report.add(
                Problem(
                    "checkpoint",
                    f"checkpoint at size {checkpoint.size} comes after leaf {self.compact.size - 1} (out of place)",
                    size=checkpoint.size,
                )
            )
            return
        heapq.heappush(self.waiting, (checkpoint.size, self.sequence, cp))
        self.sequence += 1
        if checkpoint.size == self.compact.size:
            self._check_due()

    def _check_consistency(self, cp: _Checkpoint, checkpoint: Checkpoint) -> None:
        previous, self.previous_signed = self.previous_signed, checkpoint
        if cp.consistency is None:
            return
        old_size, proof = cp.consistency
        if previous is None or previous.size != old_size:
            self.report.add(
                Problem(
                    "consistency",
                    f"checkpoint at size {checkpoint.size}: consistency proof from "
                    f"size {old_size}, but the previous checkpoint is not of that size",
                    size=checkpoint.size,
                )
            )
            return
        try:
            verify_consistency(previous.size, checkpoint.size, previous.root, checkpoint.root, proof)
        except ProofError as exc:
            self.report.add(
                Problem(
                    "consistency",
                    f"checkpoints at sizes {previous.size} and {checkpoint.size} are not consistent: {exc}",
                    size=checkpoint.size,
                )
            )
            return
        self.report.consistency_proofs += 1

    def _check_due(self) -> None:
        size = self.compact.size
        root = self.compact.root()
        while self.waiting and self.waiting[0][0] == size:
            _, _, cp = heapq.heappop(self.waiting)
            self.due.append((size, root, cp))

    def judge(self) -> None:
        """Compare the checkpoints reached with the roots at their sizes; done after a batch's node checks, so
        that a root mismatch names the earliest leaf those found."""
        due, self.due = self.due, []
        for size, root, cp in due:
            assert cp.checkpoint is not None
            if cp.checkpoint.root == root:
                self.report.checkpoints_ok += 1
                self.last_good = max(self.last_good, size)
                continue
            first = self.first_bad if self.first_bad is not None and self.first_bad < size else size - 1
            start = min(self.last_good, first)
            self.mark(first)
            after = f", after leaf {self.last_good - 1}" if self.last_good else ""
            self.report.add(
                Problem(
                    "checkpoint",
                    f"checkpoint at size {size}: root differs from the records (first divergence at or before leaf "
                    f"{first}{after})",
                    index=start,
                    end=first + 1,
                    size=size,
                )
            )

    def finish(self) -> None:
        """Judge what is due; report the checkpoints the leaves never reached."""
        self.judge()
        n = self.compact.size
        while self.waiting:
            size, _, _ = heapq.heappop(self.waiting)
            self.report.add(
                Problem(
                    "checkpoint", f"checkpoint at size {size} is beyond the last leaf ({n} leaves)", index=n, size=size
                )
            )
        self.report.leaves = n
        self.report.root = self.compact.root()


def _node_problems(tree: _Tree, stored: dict[tuple[int, int], bytes], bad: set[tuple[int, int]]) -> None:
    """Compare the nodes completed since the last call with the stored ones; report only the lowest of a
    mismatching chain (an edited leaf changes every ancestor), and nothing once positions have shifted."""
    report = tree.report
    for level, idx, computed in tree.completed:
        report.nodes_checked += 1
        if tree.shifted:
            continue
        have = stored.get((level, idx))
        if have == computed:
            continue
        bad.add((level, idx))
        if level > 1 and ((level - 1, 2 * idx) in bad or (level - 1, 2 * idx + 1) in bad):
            continue  # a consequence of a mismatch below, already reported
        start, end = idx << level, (idx + 1) << level
        tree.mark(end - 1)
        if have is None:
            report.add(
                Problem(
                    "node",
                    f"tree node (level {level}, index {idx}) over leaves {start}..{end - 1} is missing",
                    index=start,
                    end=end,
                )
            )
        else:
            which = f"leaf {start} or {start + 1}" if level == 1 else f"leaves {start}..{end - 1}"
            report.add(
                Problem(
                    "record",
                    f"{which}: record bytes do not match the stored tree hash over them "
                    f"(node level {level}, index {idx})",
                    index=start,
                    end=end,
                )
            )
    tree.completed = []


# Workers


def _executor(workers: int) -> Executor | None:
    if workers <= 0:
        return None
    # spawn: forking a process that runs an event loop and database threads is not safe.
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))


def _auto_workers(workers: int | None, expected: int) -> int:
    if workers is not None:
        return workers
    return (os.cpu_count() or 1) if expected >= PARALLEL_FROM else 0


# The database


async def verify_database(
    engine: AsyncEngine,
    verifier: NoteVerifier,
    *,
    witnesses: Sequence[CosignatureVerifier] = (),
    quorum: int | None = None,
    progress: Progress | None = None,
    workers: int | None = None,
    batch: int = BATCH,
) -> VerifyReport:
    """Verify the log stored in ``engine``'s database against the log's public key (see the module docstring)."""
    started = time.perf_counter()
    report = VerifyReport(source="database", origin=verifier.name, vkey=verifier.vkey())
    tree = _Tree(report, verifier, collect_nodes=True)
    async with engine.connect() as conn:
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
        tree.add_checkpoint(_Checkpoint(int(row.size), str(row.note), bytes(row.root), int(row.size)))
    report.latest_checkpoint = int(rows[-1].size) if rows else None

    report.workers = _auto_workers(workers, head_size)
    executor = _executor(report.workers)
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
                    Problem(
                        "record", f"leaf {indexes[offset]}: {message}", index=indexes[offset], end=indexes[offset] + 1
                    )
                )
            before = tree.compact.size
            for index, leaf in zip(indexes, hashes, strict=True):
                if index != tree.compact.size and not tree.shifted:
                    _position_problem(tree, index)
                tree.append(leaf)
            stored = await _stored_nodes(engine, before, tree.compact.size)
            _node_problems(tree, stored, bad_nodes)
            tree.judge()
            if progress is not None:
                progress(tree.compact.size, max(expected, tree.compact.size))

        while True:
            async with engine.connect() as conn:
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
            job = executor.submit(_digest_entries, entries) if executor is not None else _digest_entries(entries)
            pending.append((indexes, job))
            while len(pending) > max(2, 2 * report.workers):
                await drain_one()
        while pending:
            await drain_one()
    finally:
        if executor is not None:
            executor.shutdown(cancel_futures=True)
    tree.finish()
    n = tree.compact.size
    beyond = await _nodes_beyond(engine, n)
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
        await _check_stored_cosignatures(engine, tree, witnesses, quorum)
    report.seconds = time.perf_counter() - started
    return report


def _position_problem(tree: _Tree, index: int) -> None:
    expected = tree.compact.size
    tree.shifted = True
    tree.mark(expected)
    if index > expected:
        missing = (
            f"leaf index {expected} missing"
            if index == expected + 1
            else f"leaf indexes {expected}..{index - 1} missing"
        )
        tree.report.add(Problem("missing", missing, index=expected, end=index))
    else:
        tree.report.add(Problem("extra", f"leaf index {index} appears again at position {expected}", index=expected))


async def _stored_nodes(engine: AsyncEngine, before: int, after: int) -> dict[tuple[int, int], bytes]:
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
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(audit_nodes.c.level, audit_nodes.c.idx, audit_nodes.c.hash).where(or_(*ranges))
        )
        return {(int(r.level), int(r.idx)): bytes(r.hash) for r in rows}


async def _nodes_beyond(engine: AsyncEngine, n: int) -> int:
    conditions = [and_(audit_nodes.c.level == level, audit_nodes.c.idx >= (n >> level)) for level in range(1, 63)]
    async with engine.connect() as conn:
        count = (await conn.execute(select(func.count()).select_from(audit_nodes).where(or_(*conditions)))).scalar()
    return int(count or 0)


async def _check_stored_cosignatures(
    engine: AsyncEngine, tree: _Tree, witnesses: Sequence[CosignatureVerifier], quorum: int | None
) -> None:
    report = tree.report
    by_name = {w.name: w for w in witnesses}
    async with engine.connect() as conn:
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
    _quorum(report, witnesses, quorum, valid.get(report.latest_checkpoint or -1, set()))


def _quorum(
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


# Export files


def open_header(line: bytes) -> dict[str, Any]:
    """The header line of an export file; raises ``VerifyError``."""
    try:
        header = json.loads(line)
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
    verifier: NoteVerifier,
    *,
    witnesses: Sequence[CosignatureVerifier] = (),
    quorum: int | None = None,
    progress: Progress | None = None,
    workers: int | None = None,
    batch: int = BATCH,
) -> VerifyReport:
    """Verify an export (:mod:`deputy.audit.export`) offline, with only the log's public key (and witness keys)."""
    started = time.perf_counter()
    report = VerifyReport(source=str(path), origin=verifier.name, vkey=verifier.vkey())
    tree = _Tree(report, verifier, collect_nodes=False)
    latest: tuple[Checkpoint, str] | None = None
    with path.open("rb") as handle:
        header = open_header(handle.readline())
        if header.get("origin") != verifier.name:
            report.add(Problem("format", f"file is of log {header.get('origin')!r}, the key is for {verifier.name!r}"))
        claimed = header.get("size")
        expected: int = claimed if type(claimed) is int else 0
        report.head_size = expected
        report.workers = _auto_workers(workers, expected)
        executor = _executor(report.workers)
        pending: deque[tuple[list[bytes], Future[Any] | list[LineResult] | None]] = deque()

        def drain_one() -> None:
            nonlocal latest
            lines, job = pending.popleft()
            if job is None:  # one non-leaf line
                found = _other_line(tree, lines[0])
                if found is not None:
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
                    _position_problem(tree, index)
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
                        pending.append((leaves, _submit(executor, leaves)))
                        leaves = []
                    pending.append(([line], None))
                if leaves:
                    pending.append((leaves, _submit(executor, leaves)))
                while len(pending) > max(4, 4 * report.workers):
                    drain_one()
            while pending:
                drain_one()
        finally:
            if executor is not None:
                executor.shutdown(cancel_futures=True)
    tree.finish()
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
            names = _valid_cosigners(report, latest[0], latest[1], witnesses)
        _quorum(report, witnesses, quorum, names)
    report.seconds = time.perf_counter() - started
    return report


def _submit(executor: Executor | None, lines: list[bytes]) -> Future[Any] | list[LineResult]:
    return executor.submit(_digest_lines, lines) if executor is not None else _digest_lines(lines)


def _other_line(tree: _Tree, line: bytes) -> tuple[Checkpoint, str] | None:
    """A checkpoint line (returned when its signature verified), or a line that does not belong."""
    position = tree.compact.size
    try:
        item = json.loads(line)
    except ValueError as exc:
        tree.report.add(Problem("format", f"line after leaf {position - 1} is not JSON: {exc}", index=position))
        return None
    if isinstance(item, dict) and "index" in item:  # a leaf line spelled differently: still a leaf
        index, leaf, problem = _digest_lines([line])[0]
        if index is not None and leaf is not None:
            if problem is not None:
                tree.report.add(Problem("record", f"leaf {index}: {problem}", index=index, end=index + 1))
            if index != position and not tree.shifted:
                _position_problem(tree, index)
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
    cp = _Checkpoint(size, note, consistency=consistency)
    tree.add_checkpoint(cp)
    tree.report.latest_checkpoint = size
    return (cp.checkpoint, note) if cp.checkpoint is not None else None


def _valid_cosigners(
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
