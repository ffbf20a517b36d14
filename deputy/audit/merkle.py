"""The RFC 9162 Merkle tree: hashing, proof generation and proof verification.

- §2.1.1 Merkle Tree Hash (MTH): ``leaf_hash``, ``node_hash``, ``EMPTY_ROOT``; a tree of n > 1 leaves
  splits at k, the largest power of two smaller than n.
- §2.1.3.1 inclusion proof (PATH) and §2.1.3.2 its verification: ``inclusion_proof``, ``verify_inclusion``.
- §2.1.4.1 consistency proof (PROOF) and §2.1.4.2 its verification: ``consistency_proof``,
  ``verify_consistency``.

Hashes are raw 32-byte SHA-256 digests. Proof generation is written against a ``SubtreeRoot`` callback so that
the same code serves an in-memory tree (``MemoryTree``) and a log kept in storage. ``CompactRange`` keeps only
the right edge of the tree, which is all an append-only log needs to compute its next root.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

HASH_SIZE = 32

SubtreeRoot = Callable[[int, int], bytes]
"""``subtree_root(start, end)`` returns the MTH of leaves ``[start, end)``."""


class ProofError(ValueError):
    """A proof, or the sizes, hashes or roots it was checked against, failed verification."""


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


EMPTY_ROOT = hashlib.sha256(b"").digest()


def _split(n: int) -> int:
    """The largest power of two smaller than ``n`` (n > 1): where MTH splits a range of n leaves."""
    return 1 << ((n - 1).bit_length() - 1)


def inclusion_proof(index: int, size: int, subtree_root: SubtreeRoot) -> list[bytes]:
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is outside a tree of size {size}")
    proof: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            proof.append(subtree_root(start + k, end))
            end = start + k
        else:
            proof.append(subtree_root(start, start + k))
            start += k
    proof.reverse()  # walked root-to-leaf; PATH lists siblings leaf-to-root
    return proof


def consistency_proof(old_size: int, new_size: int, subtree_root: SubtreeRoot) -> list[bytes]:
    if not 0 < old_size <= new_size:
        raise ValueError(f"no consistency proof from size {old_size} to size {new_size}")
    proof: list[bytes] = []
    # [start, start + n) is the current subtree, of which the old tree covers the first m leaves.
    start, m, n = 0, old_size, new_size
    old_is_whole_subtree = True  # SUBPROOF's flag b: the verifier already knows this node (it is the old root)
    while m != n:
        k = _split(n)
        if m <= k:
            proof.append(subtree_root(start + k, start + n))
            n = k
        else:
            proof.append(subtree_root(start, start + k))
            start, m, n = start + k, m - k, n - k
            old_is_whole_subtree = False
    if not old_is_whole_subtree:
        proof.append(subtree_root(start, start + n))
    proof.reverse()
    return proof


def _no_hash(start: int, end: int) -> bytes:
    return b""


def _check_hash(what: str, value: bytes) -> None:
    if len(value) != HASH_SIZE:
        raise ProofError(f"{what} is {len(value)} bytes, expected {HASH_SIZE}")


def _check_proof(kind: str, proof: Sequence[bytes], expected: int) -> None:
    # A proof's shape depends only on the sizes, so an exact length check rules out padded or truncated proofs
    # before any hashing. It also stands in for the RFC's "sn is 0" checks, and so for the extra shifting of fn
    # and sn that only those checks need: once fn == sn it stays so, and every later sibling is a left one.
    if len(proof) != expected:
        raise ProofError(f"{kind} proof has {len(proof)} hashes, expected {expected}")
    for i, h in enumerate(proof):
        _check_hash(f"{kind} proof hash {i}", h)


def verify_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes) -> None:
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of size {size}")
    _check_hash("leaf hash", leaf)
    _check_hash("root", root)
    _check_proof("inclusion", proof, len(inclusion_proof(index, size, _no_hash)))
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        # The sibling is on the left when this node is a right child, or is the last node of its level.
        r = node_hash(p, r) if fn & 1 or fn == sn else node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    if not hmac.compare_digest(r, root):
        raise ProofError(f"inclusion proof for leaf {index} does not lead to the root of the tree of size {size}")


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]) -> None:
    if old_size < 0 or new_size < 0:
        raise ProofError(f"tree sizes must not be negative, got {old_size} and {new_size}")
    if old_size > new_size:
        raise ProofError(f"old tree size {old_size} is larger than new tree size {new_size}")
    _check_hash("old root", old_root)
    _check_hash("new root", new_root)
    if old_size == 0 or old_size == new_size:
        _check_proof("consistency", proof, 0)
        # Every tree extends the empty tree, but a non-empty root claimed for it is a forged checkpoint.
        if old_size == 0 and not hmac.compare_digest(old_root, EMPTY_ROOT):
            raise ProofError("old root of an empty tree is not the empty root")
        if old_size == new_size and not hmac.compare_digest(old_root, new_root):
            raise ProofError(f"trees of equal size {old_size} have different roots")
        return
    _check_proof("consistency", proof, len(consistency_proof(old_size, new_size, _no_hash)))
    # When the old tree is a whole subtree of the new one its root is the first node of the path, unsent.
    path = [old_root, *proof] if old_size & (old_size - 1) == 0 else list(proof)
    fn, sn = old_size - 1, new_size - 1
    # Levels where the old tree's last node is a right child are already folded into the first path hash.
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if not hmac.compare_digest(fr, old_root):
        raise ProofError(f"consistency proof does not lead to the old root of size {old_size}")
    if not hmac.compare_digest(sr, new_root):
        raise ProofError(f"consistency proof does not lead to the new root of size {new_size}")


class MemoryTree:
    """Leaf hashes in memory, with every perfect subtree's hash kept so any root or proof costs O(log n)."""

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        # _levels[h][i] is the MTH of the perfect, aligned subtree of leaves [i * 2**h, (i + 1) * 2**h).
        # Leaves never change, so these hashes never go stale; keeping them costs one hash per append.
        self._levels: list[list[bytes]] = [[]]
        for leaf in leaf_hashes:
            self.append(leaf)

    def append(self, leaf: bytes) -> None:
        if len(leaf) != HASH_SIZE:
            raise ValueError(f"leaf hash is {len(leaf)} bytes, expected {HASH_SIZE}")
        self._levels[0].append(leaf)
        level = 0
        while len(self._levels[level]) % 2 == 0:
            if level + 1 == len(self._levels):
                self._levels.append([])
            self._levels[level + 1].append(node_hash(*self._levels[level][-2:]))
            level += 1

    @property
    def size(self) -> int:
        return len(self._levels[0])

    def root(self, size: int | None = None) -> bytes:
        size = self.size if size is None else size
        if not 0 <= size <= self.size:
            raise ValueError(f"no root for size {size} in a tree of size {self.size}")
        return self.subtree_root(0, size) if size else EMPTY_ROOT

    def subtree_root(self, start: int, end: int) -> bytes:
        if not 0 <= start < end <= self.size:
            raise ValueError(f"no subtree [{start}, {end}) in a tree of size {self.size}")
        n = end - start
        if n & (n - 1) == 0 and start % n == 0:
            return self._levels[n.bit_length() - 1][start // n]
        k = _split(n)
        return node_hash(self.subtree_root(start, start + k), self.subtree_root(start + k, end))

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        size = self.size if size is None else size
        if size > self.size:
            raise ValueError(f"no proof for size {size} in a tree of size {self.size}")
        return inclusion_proof(index, size, self.subtree_root)

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        new_size = self.size if new_size is None else new_size
        if new_size > self.size:
            raise ValueError(f"no proof for size {new_size} in a tree of size {self.size}")
        return consistency_proof(old_size, new_size, self.subtree_root)


@dataclass
class CompactRange:
    """The perfect subtrees covering leaves [0, size), largest first: one per set bit of ``size``."""

    size: int = 0
    hashes: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.size < 0:
            raise ValueError(f"compact range size {self.size} is negative")
        if len(self.hashes) != self.size.bit_count() or any(len(h) != HASH_SIZE for h in self.hashes):
            raise ValueError(
                f"a compact range of size {self.size} needs {self.size.bit_count()} hashes of {HASH_SIZE} bytes"
            )

    @classmethod
    def empty(cls) -> CompactRange:
        return cls()

    def append(self, leaf: bytes) -> list[tuple[int, int, bytes]]:
        """Append a leaf hash; returns the perfect subtrees it completes, as (level >= 1, index at that level,
        hash): what a store of the tree's nodes keeps (:mod:`deputy.audit.log`) or checks (:mod:`deputy.audit.verify`).
        """
        if len(leaf) != HASH_SIZE:
            raise ValueError(f"leaf hash is {len(leaf)} bytes, expected {HASH_SIZE}")
        self.hashes.append(leaf)
        completed: list[tuple[int, int, bytes]] = []
        # Each trailing one bit of the old size is a subtree the same size as the one just completed: merge.
        position, level, carry = self.size, 0, self.size
        while carry & 1:
            right = self.hashes.pop()
            self.hashes[-1] = node_hash(self.hashes[-1], right)
            position, level, carry = position >> 1, level + 1, carry >> 1
            completed.append((level, position, self.hashes[-1]))
        self.size += 1
        return completed

    def root(self) -> bytes:
        if not self.hashes:
            return EMPTY_ROOT
        # MTH nests the smaller subtrees on the right, so fold from the smallest.
        root = self.hashes[-1]
        for h in reversed(self.hashes[:-1]):
            root = node_hash(h, root)
        return root

    def to_bytes(self) -> bytes:
        return self.size.to_bytes(8, "big") + b"".join(self.hashes)

    @classmethod
    def from_bytes(cls, data: bytes) -> CompactRange:
        if len(data) < 8:
            raise ValueError(f"compact range is {len(data)} bytes, too short for its size")
        size = int.from_bytes(data[:8], "big")
        expected = 8 + HASH_SIZE * size.bit_count()
        if len(data) != expected:
            raise ValueError(f"compact range of size {size} must be {expected} bytes, got {len(data)}")
        return cls(size, [data[i : i + HASH_SIZE] for i in range(8, len(data), HASH_SIZE)])
