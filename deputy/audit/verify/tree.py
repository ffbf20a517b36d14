"""The recomputed tree of a verification, shared by the database and the file verifiers.

Leaves are folded into an RFC 9162 compact range (:mod:`deputy.audit.merkle`); in the database, every stored
perfect-subtree hash is compared with the recomputed one, which locates an edited or moved record to the two
leaves under a level-1 node. Every checkpoint is opened with the log's keys (:class:`deputy.audit.log_keys.LogKeys`,
followed through hand-overs), and its root compared with the root recomputed at its size; an exported file carries
a consistency proof from the previous checkpoint (RFC 9162 §2.1.4.2), which is verified too.

Anchors (:mod:`deputy.audit.verify.anchors`) are checkpoints trusted from outside the log: the recomputed root at
each one's size is kept, and compared once the pass is done. With every leaf read, that comparison is exactly the
consistency check of RFC 9162 §2.1.4: the anchor's tree is a prefix of the log's.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from deputy.audit.checkpoint import Checkpoint, CheckpointError
from deputy.audit.log_keys import LogKeys
from deputy.audit.merkle import CompactRange, ProofError, verify_consistency
from deputy.audit.note import NoteError
from deputy.audit.verify.anchors import Anchor
from deputy.audit.verify.report import Problem, VerifyReport


@dataclass
class PendingCheckpoint:
    size: int
    note: str
    root_column: bytes | None = None  # the database's root column
    size_column: int | None = None
    consistency: tuple[int, list[bytes]] | None = None  # an export's (from size, proof)
    checkpoint: Checkpoint | None = None  # once the signature verified


class Tree:
    """The recomputed tree, the checkpoints waiting for their size, and the report they feed."""

    def __init__(self, report: VerifyReport, keys: LogKeys, collect_nodes: bool) -> None:
        self.report = report
        self.keys = keys
        self.compact = CompactRange()
        self.collect_nodes = collect_nodes
        self.completed: list[tuple[int, int, bytes]] = []  # (level, idx, hash) since the last drain
        self.waiting: list[tuple[int, int, PendingCheckpoint | Anchor]] = []  # heap of (size, sequence, item)
        self.sequence = 0
        self.last_good = 0  # size of the latest checkpoint whose root matched
        self.first_bad: int | None = None  # lowest leaf index known to be wrong
        self.shifted = False  # a leaf is missing or out of place: later positions are all off
        self.verified: list[Checkpoint] = []  # checkpoints whose signature verified, in arrival order
        self.previous_signed: Checkpoint | None = None
        self.due: list[tuple[int, bytes, PendingCheckpoint | Anchor]] = []  # (size, recomputed root, item) to judge
        self.anchors: list[Anchor] = []
        self.anchor_roots: dict[int, bytes] = {}  # the recomputed root at each anchor's size

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

    def add_checkpoint(self, cp: PendingCheckpoint) -> None:
        """Open the note; queue it to be compared with the tree when the tree reaches its size."""
        report = self.report
        report.checkpoints += 1
        try:
            checkpoint = self.keys.follow(cp.note)
        except (NoteError, CheckpointError) as exc:
            report.add(
                Problem("checkpoint", f"checkpoint at size {cp.size}: signature does not verify: {exc}", size=cp.size)
            )
            return
        if checkpoint.origin != self.keys.origin:
            report.add(
                Problem(
                    "checkpoint",
                    f"checkpoint at size {cp.size}: origin {checkpoint.origin!r} is not "
                    f"the log's {self.keys.origin!r}",
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
        report.latest_signed = max(report.latest_signed, checkpoint.size)
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

    def _check_consistency(self, cp: PendingCheckpoint, checkpoint: Checkpoint) -> None:
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
            if isinstance(cp, Anchor):
                self.anchor_roots[size] = root
                continue
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

    # Anchors

    def add_anchor(self, anchor: Anchor) -> None:
        """Keep the recomputed root at the anchor's size, to compare once the pass is done (:meth:`finish`)."""
        self.anchors.append(anchor)
        self.report.anchors += 1
        if anchor.checkpoint.size == 0 or anchor.checkpoint.size == self.compact.size:
            self.anchor_roots[anchor.checkpoint.size] = self.compact.root()
            return
        heapq.heappush(self.waiting, (anchor.checkpoint.size, self.sequence, anchor))
        self.sequence += 1

    def _judge_anchor(self, anchor: Anchor) -> None:
        report, size, n = self.report, anchor.checkpoint.size, self.compact.size
        try:
            self.keys.open_at(anchor.note)
        except (NoteError, CheckpointError) as exc:
            report.add(Problem("anchor", f"{anchor.label} is not signed by the log's key: {exc}", size=size))
            return
        if anchor.checkpoint.origin != self.keys.origin:
            report.add(Problem("anchor", f"{anchor.label} is of log {anchor.checkpoint.origin!r}", size=size))
            return
        root = self.anchor_roots.get(size)
        if root is None:
            what = "the log is empty" if n == 0 else f"the log has only {n} leaves"
            gone, verb = (f"leaf {n}", "was") if size - n == 1 else (f"leaves {n}..{size - 1}", "were")
            # Only the records up to the latest checkpoint that matched are known to be the ones it covers.
            start = min(n, self.last_good)
            changed = f"; the records after leaf {start - 1} may have been changed too" if start < n else ""
            report.add(
                Problem(
                    "anchor",
                    f"{anchor.label} has size {size}, but {what}: {gone} {verb} removed (truncated or rewritten)"
                    f"{changed}",
                    index=start,
                    end=size,
                    size=size,
                )
            )
            return
        if root != anchor.checkpoint.root:
            first = self.first_bad if self.first_bad is not None and self.first_bad < size else size - 1
            good = self.last_good if self.last_good < size else 0  # the records up to a matching checkpoint agree
            after = f", after leaf {good - 1}" if good else ""
            report.add(
                Problem(
                    "anchor",
                    f"{anchor.label} (size {size}) is not a prefix of the log: its root differs from the records' "
                    f"(first divergence at or before leaf {first}{after})",
                    index=min(first, good),
                    end=size,
                    size=size,
                )
            )
            return
        report.anchors_ok += 1

    def finish(self, allow_unsigned: int = 0) -> None:
        """Judge what is due; report the checkpoints the leaves never reached, the anchors that are not a prefix of
        the log, and more leaves after the latest signed checkpoint than ``allow_unsigned``."""
        self.judge()
        n = self.compact.size
        while self.waiting:
            size, _, item = heapq.heappop(self.waiting)
            if isinstance(item, Anchor):
                continue  # judged below: beyond the last leaf
            self.report.add(
                Problem(
                    "checkpoint", f"checkpoint at size {size} is beyond the last leaf ({n} leaves)", index=n, size=size
                )
            )
        for anchor in self.anchors:
            self._judge_anchor(anchor)
        report = self.report
        report.leaves = n
        report.root = self.compact.root()
        report.keys = tuple(self.keys.vkeys())
        expected = self.keys.expected
        if expected is not None and report.keys != expected:
            report.add(Problem("keys", f"the log's checkpoints follow the keys {' → '.join(report.keys)}, its key "
                               f"files state {' → '.join(expected)}: a hand-over is missing, or checkpoints were "
                               "signed with a key that was retired (or never rotated to)"))
        # Records after the latest signed checkpoint are vouched for by nothing: whoever can write the database
        # can change or drop them and recompute the tree, so a verifier cannot tell. A cleanly stopped Deputy
        # signs its head; a running one leaves at most about checkpoint_every records unsigned.
        report.unsigned = max(0, n - report.latest_signed)
        if report.unsigned > allow_unsigned:
            start = report.latest_signed
            which = f"leaf {start}" if report.unsigned == 1 else f"leaves {start}..{n - 1}"
            report.add(
                Problem(
                    "unsigned",
                    f"{which} ({report.unsigned} records) are not covered by a signed checkpoint "
                    f"({allow_unsigned} allowed): they could have been changed or appended by anyone who can write "
                    "the database",
                    index=start,
                    end=n,
                    size=start,
                )
            )


def position_problem(tree: Tree, index: int) -> None:
    """Leaf ``index`` arrived where leaf ``tree.compact.size`` was expected: later positions are all off."""
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


def node_problems(tree: Tree, stored: dict[tuple[int, int], bytes], bad: set[tuple[int, int]]) -> None:
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

