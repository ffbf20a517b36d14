"""The RFC 9162 Merkle tree: Certificate Transparency known answers, and properties of random trees."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deputy.audit import merkle
from deputy.audit.merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    CompactRange,
    MemoryTree,
    ProofError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    verify_consistency,
    verify_inclusion,
)

# --- Known answers ------------------------------------------------------------------------------------------------
# The RFC 6962 test tree shared by Certificate Transparency implementations, as published by transparency-dev/merkle
# at commit 417fb0c314750d94e53942e9f92e79b6d35915db: leaves, node and root hashes from testonly/constants.go,
# proofs from cmd/proofgen/main.go (whose leaf indices count from 1; here they count from 0).

LEAVES = [
    bytes.fromhex(x)
    for x in ["", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f"]
]
NODES = [  # NODES[level][i]: the hash of the perfect subtree of leaves [i * 2**level, (i + 1) * 2**level)
    [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
        "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
        "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
        "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
    ],
    [
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
        "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
        "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
    ],
    [
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
    ],
    ["5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"],
]
ROOTS = [  # ROOTS[size]
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
COMPACT = {  # size -> the (level, index) of each node of its compact range, largest first
    1: [(0, 0)],
    2: [(1, 0)],
    3: [(1, 0), (0, 2)],
    4: [(2, 0)],
    5: [(2, 0), (0, 4)],
    6: [(2, 0), (1, 2)],
    7: [(2, 0), (1, 2), (0, 6)],
    8: [(3, 0)],
}
INCLUSION = [  # (index, size, proof)
    (0, 1, []),
    (0, 8, [NODES[0][1], NODES[1][1], NODES[2][1]]),
    (5, 8, [NODES[0][4], NODES[1][3], NODES[2][0]]),
    (2, 3, [NODES[1][0]]),
    (1, 5, [NODES[0][0], NODES[1][1], NODES[0][4]]),
]
CONSISTENCY = [  # (old_size, new_size, proof)
    (1, 1, []),
    (1, 8, [NODES[0][1], NODES[1][1], NODES[2][1]]),
    (6, 8, [NODES[1][2], NODES[1][3], NODES[2][0]]),
    (2, 5, [NODES[1][1], NODES[0][4]]),
    (6, 7, [NODES[1][2], NODES[0][6], NODES[2][0]]),
]


def h(hex_: str) -> bytes:
    return bytes.fromhex(hex_)


def ct_tree() -> MemoryTree:
    return MemoryTree(leaf_hash(leaf) for leaf in LEAVES)


def test_hashes_are_sha256_with_rfc_domain_separation() -> None:
    assert h(ROOTS[0]) == EMPTY_ROOT
    assert leaf_hash(b"") == h(NODES[0][0])
    assert node_hash(h(NODES[0][0]), h(NODES[0][1])) == h(NODES[1][0])
    # The 0x00/0x01 prefixes stop a node from being passed off as a leaf of the same bytes.
    assert leaf_hash(h(NODES[0][0]) + h(NODES[0][1])) != h(NODES[1][0])


def test_every_size_of_the_known_tree_has_its_known_root() -> None:
    tree, growing, compact = ct_tree(), MemoryTree(), CompactRange.empty()
    assert growing.root() == compact.root() == EMPTY_ROOT
    for size, leaf in enumerate(LEAVES, start=1):
        growing.append(leaf_hash(leaf))
        compact.append(leaf_hash(leaf))
        assert tree.root(size) == growing.root() == compact.root() == h(ROOTS[size])
        assert growing.size == compact.size == size
    assert tree.root() == h(ROOTS[8])
    assert tree.root(0) == EMPTY_ROOT


def test_the_known_tree_has_its_known_perfect_subtrees() -> None:
    tree = ct_tree()
    for level, hashes in enumerate(NODES):
        width = 1 << level
        assert [tree.subtree_root(i * width, (i + 1) * width) for i in range(len(hashes))] == [h(x) for x in hashes]


def test_compact_ranges_of_the_known_tree_hold_its_known_subtrees() -> None:
    compact = CompactRange.empty()
    for size, leaf in enumerate(LEAVES, start=1):
        compact.append(leaf_hash(leaf))
        assert compact.hashes == [h(NODES[level][i]) for level, i in COMPACT[size]]


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION)
def test_known_inclusion_proofs(index: int, size: int, proof: list[str]) -> None:
    tree = ct_tree()
    assert tree.inclusion_proof(index, size) == [h(x) for x in proof]
    verify_inclusion(index, size, leaf_hash(LEAVES[index]), [h(x) for x in proof], h(ROOTS[size]))


@pytest.mark.parametrize(("old_size", "new_size", "proof"), CONSISTENCY)
def test_known_consistency_proofs(old_size: int, new_size: int, proof: list[str]) -> None:
    tree = ct_tree()
    assert tree.consistency_proof(old_size, new_size) == [h(x) for x in proof]
    verify_consistency(old_size, new_size, h(ROOTS[old_size]), h(ROOTS[new_size]), [h(x) for x in proof])


# The probe files of transparency-dev/merkle's testdata/{inclusion,consistency}: the known proofs above with every
# corruption its generator makes, plus edge cases, each marked whether verification must fail.
VECTORS = Path(__file__).parent / "merkle_vectors"
# Where this verifier is stricter than the Go one, and why.
STRICTER = {
    "consistency/additional/sizes-are-equal-one-and-proof-is-empty.json": "old root is 12 bytes, expected 32",
}


def probes(kind: str) -> list[Any]:
    data = json.loads((VECTORS / f"{kind}.json").read_text())
    return [pytest.param(p, id=p["file"]) for p in data["probes"]]


def b64(value: str) -> bytes:
    return base64.b64decode(value)


@pytest.mark.parametrize("probe", probes("inclusion"))
def test_inclusion_probes(probe: dict[str, Any]) -> None:
    def check() -> None:
        proof = [b64(x) for x in probe["proof"]]
        verify_inclusion(probe["leafIdx"], probe["treeSize"], b64(probe["leafHash"]), proof, b64(probe["root"]))

    if probe["wantErr"]:
        with pytest.raises(ProofError):
            check()
    else:
        check()


@pytest.mark.parametrize("probe", probes("consistency"))
def test_consistency_probes(probe: dict[str, Any]) -> None:
    def check() -> None:
        proof = [b64(x) for x in probe["proof"]]
        verify_consistency(probe["size1"], probe["size2"], b64(probe["root1"]), b64(probe["root2"]), proof)

    if probe["wantErr"] or probe["file"] in STRICTER:
        with pytest.raises(ProofError, match=STRICTER.get(probe["file"])):
            check()
    else:
        check()


def test_the_probe_files_cover_the_known_proofs_and_their_corruptions() -> None:
    # Guards against the data files going missing or empty, which would make the probe tests vacuous.
    inclusion, consistency = probes("inclusion"), probes("consistency")
    assert len(inclusion) == len(consistency) == 98
    assert sum(not p.values[0]["wantErr"] for p in inclusion) == 6
    assert sum(not p.values[0]["wantErr"] for p in consistency) == 6


# --- Edges and errors ---------------------------------------------------------------------------------------------


def test_proof_generation_refuses_impossible_requests() -> None:
    tree = ct_tree()
    for index, size in [(0, 0), (8, 8), (-1, 8), (3, 2)]:
        with pytest.raises(ValueError, match="outside a tree"):
            inclusion_proof(index, size, tree.subtree_root)
    for old, new in [(0, 5), (6, 5), (-1, 2)]:
        with pytest.raises(ValueError, match="no consistency proof"):
            consistency_proof(old, new, tree.subtree_root)
    with pytest.raises(ValueError, match="no proof for size 9"):
        tree.inclusion_proof(0, 9)
    with pytest.raises(ValueError, match="no proof for size 9"):
        tree.consistency_proof(1, 9)


def test_memory_tree_refuses_ranges_it_does_not_have() -> None:
    tree = ct_tree()
    for size in (-1, 9):
        with pytest.raises(ValueError, match="no root"):
            tree.root(size)
    for start, end in [(0, 0), (3, 3), (4, 2), (-1, 2), (7, 9)]:
        with pytest.raises(ValueError, match="no subtree"):
            tree.subtree_root(start, end)
    with pytest.raises(ValueError, match="31 bytes"):
        tree.append(b"x" * 31)
    assert tree.size == 8


def test_proof_errors_say_what_failed() -> None:
    tree = ct_tree()
    leaf, root, proof = leaf_hash(LEAVES[0]), tree.root(), tree.inclusion_proof(0)
    with pytest.raises(ProofError, match="inclusion proof has 2 hashes, expected 3"):
        verify_inclusion(0, 8, leaf, proof[:2], root)
    with pytest.raises(ProofError, match="inclusion proof hash 1 is 31 bytes, expected 32"):
        verify_inclusion(0, 8, leaf, [proof[0], proof[1][:31], proof[2]], root)
    with pytest.raises(ProofError, match="leaf index 8 is outside a tree of size 8"):
        verify_inclusion(8, 8, leaf, proof, root)
    with pytest.raises(ProofError, match="leaf index -1 is outside a tree of size 8"):
        verify_inclusion(-1, 8, leaf, proof, root)
    with pytest.raises(ProofError, match="leaf index 0 is outside a tree of size 0"):
        verify_inclusion(0, 0, leaf, [], EMPTY_ROOT)
    with pytest.raises(ProofError, match="root is 33 bytes"):
        verify_inclusion(0, 8, leaf, proof, root + b"\x00")
    with pytest.raises(ProofError, match="does not lead to the root"):
        verify_inclusion(0, 8, leaf, proof[::-1], root)
    with pytest.raises(ProofError, match="old tree size 8 is larger than new tree size 7"):
        verify_consistency(8, 7, root, tree.root(7), [])
    with pytest.raises(ProofError, match="must not be negative"):
        verify_consistency(-1, 7, root, tree.root(7), [])
    with pytest.raises(ProofError, match="trees of equal size 8 have different roots"):
        verify_consistency(8, 8, root, tree.root(7), [])
    with pytest.raises(ProofError, match="consistency proof has 1 hashes, expected 0"):
        verify_consistency(8, 8, root, root, [root])


def test_the_empty_tree_is_consistent_with_every_tree_but_only_under_the_empty_root() -> None:
    tree = ct_tree()
    verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    verify_consistency(0, 8, EMPTY_ROOT, tree.root(), [])
    with pytest.raises(ProofError, match="expected 0"):
        verify_consistency(0, 8, EMPTY_ROOT, tree.root(), [EMPTY_ROOT])
    with pytest.raises(ProofError, match="not the empty root"):
        verify_consistency(0, 8, tree.root(1), tree.root(), [])
    with pytest.raises(ProofError, match="not the empty root"):
        verify_consistency(0, 0, tree.root(1), tree.root(1), [])


def test_proofs_from_a_memory_tree_cost_logarithmic_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    tree = MemoryTree(leaf_hash(i.to_bytes(4, "big")) for i in range(1000))
    calls = 0
    real = merkle.node_hash

    def counting(left: bytes, right: bytes) -> bytes:
        nonlocal calls
        calls += 1
        return real(left, right)

    monkeypatch.setattr(merkle, "node_hash", counting)
    for size in (1000, 999, 777, 513):
        calls = 0
        tree.root(size)
        tree.inclusion_proof(size // 3, size)
        tree.consistency_proof(size // 2 + 1, size)
        assert calls <= 3 * size.bit_length()  # a tree that rehashed its leaves would need about 3 * size


def test_compact_range_validates_its_shape() -> None:
    assert CompactRange.empty() == CompactRange(0, [])
    with pytest.raises(ValueError, match="needs 2 hashes"):
        CompactRange(3, [EMPTY_ROOT])
    with pytest.raises(ValueError, match="needs 1 hashes of 32 bytes"):
        CompactRange(4, [b"short"])
    with pytest.raises(ValueError, match="negative"):
        CompactRange(-1, [])
    with pytest.raises(ValueError, match="33 bytes"):
        CompactRange.empty().append(EMPTY_ROOT + b"!")


def test_compact_range_serialisation_is_size_then_hashes() -> None:
    compact = CompactRange.empty()
    for leaf in LEAVES[:7]:
        compact.append(leaf_hash(leaf))
    assert compact.to_bytes() == (7).to_bytes(8, "big") + h(NODES[2][0]) + h(NODES[1][2]) + h(NODES[0][6])
    assert CompactRange.empty().to_bytes() == bytes(8)
    assert CompactRange.from_bytes(bytes(8)) == CompactRange.empty()
    with pytest.raises(ValueError, match="too short"):
        CompactRange.from_bytes(bytes(7))


# --- Properties of random trees -----------------------------------------------------------------------------------


def largest_power_of_two_below(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: list[bytes]) -> bytes:
    """MTH exactly as RFC 9162 §2.1.1 defines it, over leaf hashes."""
    if not d:
        return EMPTY_ROOT
    if len(d) == 1:
        return d[0]
    k = largest_power_of_two_below(len(d))
    return node_hash(ref_mth(d[:k]), ref_mth(d[k:]))


def ref_path(m: int, d: list[bytes]) -> list[bytes]:
    """PATH(m, D[n]) exactly as RFC 9162 §2.1.3.1 defines it."""
    if len(d) == 1:
        return []
    k = largest_power_of_two_below(len(d))
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    """SUBPROOF(m, D[n], b) exactly as RFC 9162 §2.1.4.1 defines it."""
    if m == len(d):
        return [] if b else [ref_mth(d)]
    k = largest_power_of_two_below(len(d))
    if m <= k:
        return [*ref_subproof(m, d[:k], b), ref_mth(d[k:])]
    return [*ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]


def random_leaves(seed: bytes, size: int) -> list[bytes]:
    return [leaf_hash(seed + i.to_bytes(4, "big")) for i in range(size)]


def flip(value: bytes, bit: int) -> bytes:
    bit %= 8 * len(value)
    out = bytearray(value)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def fails(check: Any, *args: Any) -> bool:
    try:
        check(*args)
    except ProofError:
        return True
    return False


seeds = st.binary(min_size=1, max_size=8)
sizes = st.integers(1, 300)
bits = st.integers(0, 8 * HASH_SIZE - 1)
quick = settings(max_examples=50, deadline=None)


@quick
@given(seed=seeds, size=sizes, data=st.data())
def test_inclusion_proofs_follow_the_rfc_and_verify_for_every_leaf(seed: bytes, size: int, data: st.DataObject) -> None:
    leaves = random_leaves(seed, size)
    tree = MemoryTree(leaves)
    root = tree.root()
    assert root == ref_mth(leaves)
    for index in range(size):
        verify_inclusion(index, size, leaves[index], tree.inclusion_proof(index), root)
    index = data.draw(st.integers(0, size - 1))
    assert tree.inclusion_proof(index) == ref_path(index, leaves)


@quick
@given(seed=seeds, size=sizes, data=st.data())
def test_consistency_proofs_follow_the_rfc_and_verify(seed: bytes, size: int, data: st.DataObject) -> None:
    leaves = random_leaves(seed, size)
    tree = MemoryTree(leaves)
    old = data.draw(st.integers(1, size))
    proof = tree.consistency_proof(old)
    assert proof == ref_subproof(old, leaves, True)
    verify_consistency(old, size, tree.root(old), tree.root(), proof)
    # Proofs between two past sizes come from the same tree.
    older = data.draw(st.integers(1, old))
    verify_consistency(older, old, tree.root(older), tree.root(old), tree.consistency_proof(older, old))


@quick
@given(seed=seeds, size=sizes, data=st.data())
def test_subtree_roots_of_any_range_follow_the_rfc(seed: bytes, size: int, data: st.DataObject) -> None:
    leaves = random_leaves(seed, size)
    tree = MemoryTree(leaves)
    start = data.draw(st.integers(0, size - 1))
    end = data.draw(st.integers(start + 1, size))
    assert tree.subtree_root(start, end) == ref_mth(leaves[start:end])
    assert tree.root(end) == ref_mth(leaves[:end])


@quick
@given(seed=seeds, size=sizes, data=st.data())
def test_any_tampering_with_an_inclusion_proof_is_caught(seed: bytes, size: int, data: st.DataObject) -> None:
    leaves = random_leaves(seed, size)
    tree = MemoryTree(leaves)
    index = data.draw(st.integers(0, size - 1))
    proof, root, leaf = tree.inclusion_proof(index), tree.root(), leaves[index]
    junk = data.draw(st.binary(min_size=HASH_SIZE, max_size=HASH_SIZE))
    for i in range(len(proof)):
        flipped = [*proof[:i], flip(proof[i], data.draw(bits)), *proof[i + 1 :]]
        assert fails(verify_inclusion, index, size, leaf, flipped, root)
        assert fails(verify_inclusion, index, size, leaf, [*proof[:i], junk, *proof[i + 1 :]], root)
        assert fails(verify_inclusion, index, size, leaf, proof[:i] + proof[i + 1 :], root)
    for i in range(len(proof) + 1):
        assert fails(verify_inclusion, index, size, leaf, [*proof[:i], junk, *proof[i:]], root)
        assert fails(verify_inclusion, index, size, leaf, [*proof[:i], leaf, *proof[i:]], root)
    for other in range(size):
        if other != index:
            assert fails(verify_inclusion, other, size, leaf, proof, root)
            assert fails(verify_inclusion, index, size, leaves[other], proof, root)
    assert fails(verify_inclusion, index, size, flip(leaf, data.draw(bits)), proof, root)
    assert fails(verify_inclusion, index, size, leaf, proof, flip(root, data.draw(bits)))
    assert fails(verify_inclusion, index, size, leaf, proof, junk)
    past = data.draw(st.integers(index + 1, size))
    if past != size:
        assert fails(verify_inclusion, index, size, leaf, proof, tree.root(past))
    assert fails(verify_inclusion, index, size * 2, leaf, proof, root)
    if index < size // 2:
        assert fails(verify_inclusion, index, size // 2, leaf, proof, root)


@quick
@given(seed=seeds, size=sizes, data=st.data())
def test_an_inclusion_proof_binds_the_tree_size_only_through_its_shape(
    seed: bytes, size: int, data: st.DataObject
) -> None:
    # A leaf's path is the same in every tree size whose last index first differs from the leaf's index at the
    # same bit, so the proof verifies there too: the size must come from the signed checkpoint, not the proof.
    leaves = random_leaves(seed, size)
    tree = MemoryTree(leaves)
    index = data.draw(st.integers(0, size - 1))
    proof = tree.inclusion_proof(index)
    claimed = data.draw(st.integers(index + 1, 2 * size).filter(lambda n: n != size))
    same_shape = (index ^ (size - 1)).bit_length() == (index ^ (claimed - 1)).bit_length()
    assert fails(verify_inclusion, index, claimed, leaves[index], proof, tree.root()) is not same_shape


@quick
@given(seed=seeds, size=st.integers(2, 300), data=st.data())
def test_any_tampering_with_a_consistency_proof_is_caught(seed: bytes, size: int, data: st.DataObject) -> None:
    leaves = random_leaves(seed, size)
    tree = MemoryTree(leaves)
    old = data.draw(st.integers(1, size - 1))
    proof, old_root, new_root = tree.consistency_proof(old), tree.root(old), tree.root()
    junk = data.draw(st.binary(min_size=HASH_SIZE, max_size=HASH_SIZE))
    for i in range(len(proof)):
        flipped = [*proof[:i], flip(proof[i], data.draw(bits)), *proof[i + 1 :]]
        assert fails(verify_consistency, old, size, old_root, new_root, flipped)
        assert fails(verify_consistency, old, size, old_root, new_root, [*proof[:i], junk, *proof[i + 1 :]])
        assert fails(verify_consistency, old, size, old_root, new_root, proof[:i] + proof[i + 1 :])
    for i in range(len(proof) + 1):
        assert fails(verify_consistency, old, size, old_root, new_root, [*proof[:i], junk, *proof[i:]])
        assert fails(verify_consistency, old, size, old_root, new_root, [*proof[:i], old_root, *proof[i:]])
    for other in range(size + 1):
        if other != old:
            assert fails(verify_consistency, other, size, old_root, new_root, proof)
            assert fails(verify_consistency, old, size, tree.root(other), new_root, proof)
        if other != size:
            assert fails(verify_consistency, old, size, old_root, tree.root(other), proof)
    assert fails(verify_consistency, old, size, new_root, old_root, proof)
    assert fails(verify_consistency, old, size, flip(old_root, data.draw(bits)), new_root, proof)
    assert fails(verify_consistency, old, size, old_root, flip(new_root, data.draw(bits)), proof)
    assert fails(verify_consistency, old, size, old_root, junk, proof)
    assert fails(verify_consistency, old, size, old_root, new_root, [])


@quick
@given(seed=seeds, size=st.integers(2, 300), data=st.data())
def test_a_consistency_proof_binds_the_new_size_only_through_its_shape(
    seed: bytes, size: int, data: st.DataObject
) -> None:
    # As with inclusion, the new tree size is bound by the checkpoint that signs it alongside the root.
    tree = MemoryTree(random_leaves(seed, size))
    old = data.draw(st.integers(1, size - 1))
    proof = tree.consistency_proof(old)
    claimed = data.draw(st.integers(old, 2 * size).filter(lambda n: n != size))
    same_shape = ((old - 1) ^ (size - 1)).bit_length() == ((old - 1) ^ (claimed - 1)).bit_length()
    assert fails(verify_consistency, old, claimed, tree.root(old), tree.root(), proof) is not same_shape


@quick
@given(seed=seeds, size=sizes)
def test_a_compact_range_tracks_the_memory_tree_at_every_size(seed: bytes, size: int) -> None:
    leaves = random_leaves(seed, size)
    tree, compact = MemoryTree(leaves), CompactRange.empty()
    for n, leaf in enumerate(leaves, start=1):
        compact.append(leaf)
        assert compact.root() == tree.root(n)
        assert len(compact.hashes) == n.bit_count()
        assert CompactRange.from_bytes(compact.to_bytes()) == compact
    # The hashes are the perfect subtrees covering [0, size), largest first.
    start, expected = 0, []
    for bit in reversed(range(size.bit_length())):
        if size >> bit & 1:
            expected.append(tree.subtree_root(start, start + (1 << bit)))
            start += 1 << bit
    assert compact.hashes == expected


@quick
@given(size=st.integers(0, 2**64 - 1), data=st.data())
def test_corrupt_compact_range_serialisations_are_refused(size: int, data: st.DataObject) -> None:
    hashes = [data.draw(st.binary(min_size=HASH_SIZE, max_size=HASH_SIZE)) for _ in range(size.bit_count())]
    blob = CompactRange(size, hashes).to_bytes()
    assert CompactRange.from_bytes(blob) == CompactRange(size, hashes)
    cut = data.draw(st.integers(1, len(blob)))
    with pytest.raises(ValueError):
        CompactRange.from_bytes(blob[:-cut])
    extra = data.draw(st.binary(min_size=1, max_size=HASH_SIZE + 1))
    with pytest.raises(ValueError):
        CompactRange.from_bytes(blob + extra)
    other = data.draw(st.integers(0, 2**64 - 1).filter(lambda n: n.bit_count() != size.bit_count()))
    with pytest.raises(ValueError):
        CompactRange.from_bytes(other.to_bytes(8, "big") + blob[8:])
