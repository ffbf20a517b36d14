"""The result of verifying an audit log: the problems found, where they are, and what was checked.

The result is data, so the command line renders it and tests assert on it. ``kind`` names what is wrong:
``record``, ``missing``, ``extra``, ``node``, ``checkpoint``, ``consistency``, ``head``, ``cosignature``, ``quorum``,
``format`` (the log's own checks), ``unsigned`` (records no signed checkpoint covers), ``anchor`` (a checkpoint
the verifier trusts from outside the log — a kept one, a witness's — that is not a prefix of the log) and ``keys``
(the key chain the log's checkpoints follow is not the one its key files state).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from deputy.audit.merkle import EMPTY_ROOT

MAX_PROBLEMS = 100

Progress = Callable[[int, int], None]
"""``progress(leaves done, leaves expected)``."""


class VerifyError(ValueError):
    """The input cannot be verified at all (not an export file, a key of the wrong kind)."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the log. ``index``/``end``: the leaves concerned, ``[index, end)``; ``size``: the tree
    size of the checkpoint or head concerned."""

    kind: str  # see the module docstring
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
    latest_signed: int = 0  # size of the latest checkpoint whose signature verified
    unsigned: int = 0  # leaves after it
    anchors: int = 0  # trusted checkpoints given (kept ones, witnesses')
    anchors_ok: int = 0  # of them, those that are a prefix of the log
    keys: tuple[str, ...] = ()  # the log's keys followed, oldest first (more than one after a rotation)
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
        record, a node, a missing leaf) over a range (a checkpoint's, an anchor's, the unsigned tail); else the
        first problem found."""
        located = [p for p in self.problems if p.index is not None]
        precise = [p for p in located if p.kind not in ("checkpoint", "unsigned", "anchor")] or located
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

