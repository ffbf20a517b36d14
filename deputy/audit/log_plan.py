"""The pure part of appending and reading the audit tree (RFC 9162 §2.1), apart from the database.

:func:`plan_batch` decides what one append transaction writes — the leaves, the perfect-subtree nodes they
complete, the new head — from the head read under the sequencer lock (:mod:`deputy.audit.log`), on both backends.
:func:`decompose` and :func:`fold` turn an RFC 9162 subtree ``[start, end)`` into the stored perfect subtrees whose
fold is its hash, so a root or a proof reads O(log n) rows.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from deputy.audit.merkle import CompactRange, node_hash


@dataclass(frozen=True, slots=True)
class Receipt:
    """A committed record: its leaf index and RFC 9162 leaf hash."""

    index: int
    leaf_hash: bytes


@dataclass(slots=True)
class Queued:
    entry: bytes
    leaf: bytes
    future: asyncio.Future[Receipt]
    waited_for: bool = True  # someone waits for this commit (a call about to be forwarded); else it may linger
    queued_at: float = 0.0  # monotonic seconds, for a record that may linger


Node = tuple[int, int]  # (level, idx): the perfect subtree of 2**level leaves from leaf idx * 2**level


@dataclass(frozen=True, slots=True)
class BatchPlan:
    """What one append transaction writes: the leaves (index, bytes), the nodes they complete, the new head."""

    start: int
    size: int
    is_new: bool
    leaves: list[tuple[int, bytes]]
    nodes: list[tuple[int, int, bytes]]
    compact: bytes


def compact_of(head: tuple[int, bytes]) -> CompactRange:
    compact = CompactRange.from_bytes(head[1])
    if compact.size != head[0]:
        raise RuntimeError(f"audit head size {head[0]} does not match its compact range ({compact.size})")
    return compact


def plan_batch(head: tuple[int, bytes] | None, batch: list[Queued]) -> BatchPlan:
    """Extend the head read under the sequencer lock (size, compact range bytes; None: empty log) by ``batch``."""
    compact = compact_of(head) if head is not None else CompactRange.empty()
    start = compact.size
    nodes = [node for queued in batch for node in compact.append(queued.leaf)]
    leaves = [(start + offset, queued.entry) for offset, queued in enumerate(batch)]
    return BatchPlan(start, compact.size, head is None, leaves, nodes, compact.to_bytes())


def decompose(start: int, end: int) -> list[Node]:
    """The perfect subtrees, largest first, whose fold is the MTH of the RFC 9162 subtree ``[start, end)``."""
    n = end - start
    if not 0 <= start < end:
        raise ValueError(f"no subtree [{start}, {end})")
    # A tree node covers an aligned range: start is a multiple of the smallest power of two >= n.
    if start % (1 << (n - 1).bit_length()):
        raise ValueError(f"[{start}, {end}) is not an RFC 9162 subtree (its start is not aligned to its size)")
    nodes: list[Node] = []
    position = start
    for level in range(n.bit_length() - 1, -1, -1):
        if n >> level & 1:
            nodes.append((level, position >> level))
            position += 1 << level
    return nodes


def fold(hashes: list[bytes]) -> bytes:
    # MTH nests the smaller subtrees on the right, so fold from the smallest.
    root = hashes[-1]
    for h in reversed(hashes[:-1]):
        root = node_hash(h, root)
    return root


def proof_ranges(proof: Callable[[Callable[[int, int], bytes]], object]) -> list[tuple[int, int]]:
    """The subtree ranges a proof generator asks for: its shape depends only on the sizes."""
    asked: list[tuple[int, int]] = []

    def record(start: int, end: int) -> bytes:
        asked.append((start, end))
        return b""

    proof(record)
    return asked
