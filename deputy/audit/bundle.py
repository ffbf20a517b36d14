"""Offline proofs: one record's inclusion (C2SP tlog-proof), and the consistency of two checkpoints.

Inclusion, ``c2sp.org/tlog-proof@v1`` (section "Format"): the header line; ``extra <base64>`` carrying the record's
exact canonical bytes, so the proof checks offline with nothing else (the spec's "additional data necessary to
reconstruct the record hash"; it is not trusted by itself: it is bound by the inclusion proof); ``index <n>``; the
RFC 9162 inclusion path, one base64 hash a line, leaf to root; an empty line; the checkpoint note verbatim, with the
witnesses' cosignature lines when they are stored. Checking follows "Verifying a tlog proof": the leaf hash of the
record (which must be a canonical version-1 record), the log's signature on the checkpoint, ``quorum`` valid
cosignatures from the given witnesses, and the inclusion proof to the checkpoint's root.

Consistency, ``deputy.audit/consistency@v1`` (Deputy's own text form): ``old <a>``, ``new <b>``, the RFC 9162
consistency proof lines, an empty line, then both signed checkpoint notes one after the other (a note's origin line
never starts with the em dash of a signature line, so the split is unambiguous).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from deputy.audit.checkpoint import Checkpoint, CheckpointError, SignedCheckpoint, parse_decimal
from deputy.audit.cosignature import CosignatureVerifier
from deputy.audit.log import AuditLog
from deputy.audit.merkle import ProofError, leaf_hash, verify_consistency, verify_inclusion
from deputy.audit.note import (
    SIGNATURE_PREFIX,
    NoteError,
    NoteVerifier,
    b64,
    b64decode_strict,
    parse_note,
    verify_note,
)
from deputy.audit.records import RecordError, parse_record
from deputy.audit.witness_push import cosigned_note, stored_cosignatures

PROOF_HEADER = "c2sp.org/tlog-proof@v1"
CONSISTENCY_HEADER = "deputy.audit/consistency@v1"
MAX_PROOF_LINES = 63


class BundleError(ValueError):
    """A proof that is malformed or does not verify; the message says which step failed."""


@dataclass(frozen=True)
class InclusionBundle:
    index: int
    record: bytes  # the canonical record bytes: the leaf
    proof: tuple[bytes, ...]
    note: str  # the checkpoint note, with any cosignature lines

    def text(self) -> str:
        lines = [PROOF_HEADER, f"extra {b64(self.record)}", f"index {self.index}", *(b64(h) for h in self.proof)]
        return "\n".join(lines) + "\n\n" + self.note


@dataclass(frozen=True)
class CheckedInclusion:
    index: int
    record: Mapping[str, Any]
    checkpoint: Checkpoint
    cosigners: tuple[str, ...]  # given witnesses whose cosignature verified


async def make_bundle(log: AuditLog, index: int, size: int | None = None) -> InclusionBundle:
    """The proof of leaf ``index`` in the latest checkpoint (or the checkpoint of ``size``); raises ``BundleError``
    when the record is not (yet) covered by one."""
    signed = await (log.latest_checkpoint() if size is None else log.checkpoint(size))
    if signed is None:
        raise BundleError("no checkpoint" + (f" of size {size}" if size is not None else " yet"))
    size = signed.checkpoint.size
    if not 0 <= index < size:
        raise BundleError(f"record {index} is not in the checkpoint of size {size} (the next checkpoint may cover it)")
    records = [entry async for _, entry in log.leaves(index, index + 1)]
    if not records:
        raise BundleError(f"record {index} is missing from the log")
    proof = await log.inclusion_proof(index, size)
    lines = [line for _, line in await stored_cosignatures(log.engine, size)]
    return InclusionBundle(index, records[0], tuple(proof), cosigned_note(signed.note, lines))


def parse_bundle(text: str) -> InclusionBundle:
    head, sep, note = text.partition("\n\n")
    if not sep:
        raise BundleError("proof has no empty line before its checkpoint")
    lines = head.split("\n")
    if not lines or lines[0] != PROOF_HEADER:
        raise BundleError(f"proof does not start with {PROOF_HEADER}")
    lines = lines[1:]
    if not lines or not lines[0].startswith("extra "):
        raise BundleError("proof has no extra line carrying the record")
    if len(lines) - 2 > MAX_PROOF_LINES:  # counted before any line is decoded
        raise BundleError("too many inclusion proof lines")
    try:
        record = b64decode_strict(lines[0][len("extra ") :], "extra data")
        if len(lines) < 2 or not lines[1].startswith("index "):
            raise BundleError("proof has no index line")
        index = parse_decimal(lines[1][len("index ") :], "index")
        proof = tuple(b64decode_strict(line, "inclusion proof line") for line in lines[2:])
    except (NoteError, CheckpointError) as exc:
        raise BundleError(str(exc)) from None
    return InclusionBundle(index, record, proof, note)


def _verifier(log_vkey: str | NoteVerifier) -> NoteVerifier:
    if isinstance(log_vkey, NoteVerifier):
        return log_vkey
    try:
        return NoteVerifier.from_vkey(log_vkey)
    except NoteError as exc:
        raise BundleError(f"log key: {exc}") from None


def _witnesses(keys: Sequence[str | CosignatureVerifier]) -> list[CosignatureVerifier]:
    try:
        return [k if isinstance(k, CosignatureVerifier) else CosignatureVerifier.from_vkey(k) for k in keys]
    except NoteError as exc:
        raise BundleError(f"witness key: {exc}") from None


def _open_checkpoint(
    note: str, verifier: NoteVerifier, witnesses: Sequence[CosignatureVerifier], quorum: int
) -> tuple[Checkpoint, tuple[str, ...]]:
    """The log's signature, then ``quorum`` valid cosignatures from distinct given witnesses."""
    try:
        parsed = parse_note(note)
        verify_note(parsed, [verifier])
        checkpoint = Checkpoint.parse(parsed.text)
    except NoteError as exc:
        raise BundleError(f"checkpoint is not signed by the log: {exc}") from None
    except CheckpointError as exc:
        raise BundleError(f"checkpoint: {exc}") from None
    if checkpoint.origin != verifier.name:
        raise BundleError(f"checkpoint is of log {checkpoint.origin!r}, not {verifier.name!r}")
    cosigners: list[str] = []
    keys = {(w.name, w.key_id): w for w in witnesses}
    for sig in parsed.signatures:
        witness = keys.pop((sig.name, sig.key_id), None)  # pop: one vote per witness
        if witness is not None and witness.timestamp_of(parsed.text.encode(), sig.signature) is not None:
            cosigners.append(sig.name)
    if len(cosigners) < quorum:
        raise BundleError(
            f"checkpoint has {len(cosigners)} valid cosignatures from the given witnesses, {quorum} required"
        )
    return checkpoint, tuple(cosigners)


def check_bundle(
    text: str,
    log_vkey: str | NoteVerifier,
    witness_vkeys: Sequence[str | CosignatureVerifier] = (),
    quorum: int = 0,
) -> CheckedInclusion:
    """Verify a tlog-proof offline (the spec's four steps); raises ``BundleError``."""
    bundle = parse_bundle(text)
    try:
        record = parse_record(bundle.record)
    except RecordError as exc:
        raise BundleError(f"the record: {exc}") from None
    checkpoint, cosigners = _open_checkpoint(bundle.note, _verifier(log_vkey), _witnesses(witness_vkeys), quorum)
    try:
        verify_inclusion(bundle.index, checkpoint.size, leaf_hash(bundle.record), bundle.proof, checkpoint.root)
    except ProofError as exc:
        raise BundleError(f"record {bundle.index} is not included in the checkpoint: {exc}") from None
    return CheckedInclusion(bundle.index, record, checkpoint, cosigners)


@dataclass(frozen=True)
class ConsistencyBundle:
    old: SignedCheckpoint | None  # None when parsed from text, before checking
    new: SignedCheckpoint | None
    old_size: int
    new_size: int
    proof: tuple[bytes, ...]
    old_note: str
    new_note: str

    def text(self) -> str:
        lines = [CONSISTENCY_HEADER, f"old {self.old_size}", f"new {self.new_size}", *(b64(h) for h in self.proof)]
        return "\n".join(lines) + "\n\n" + self.old_note + self.new_note


async def consistency(log: AuditLog, size_a: int, size_b: int) -> ConsistencyBundle:
    """The proof that the checkpoint of ``size_a`` is a prefix of the one of ``size_b``; both must be stored."""
    if size_a > size_b:
        size_a, size_b = size_b, size_a
    old, new = await log.checkpoint(size_a), await log.checkpoint(size_b)
    for size, signed in ((size_a, old), (size_b, new)):
        if signed is None:
            raise BundleError(f"there is no checkpoint of size {size}")
    assert old is not None and new is not None
    proof = await log.consistency_proof(size_a, size_b) if 0 < size_a < size_b else []
    return ConsistencyBundle(old, new, size_a, size_b, tuple(proof), old.note, new.note)


def parse_consistency(text: str) -> ConsistencyBundle:
    head, sep, notes = text.partition("\n\n")
    lines = head.split("\n")
    if not sep or len(lines) < 3 or lines[0] != CONSISTENCY_HEADER:
        raise BundleError(f"not a {CONSISTENCY_HEADER} proof")
    if not lines[1].startswith("old ") or not lines[2].startswith("new "):
        raise BundleError("consistency proof needs 'old <size>' and 'new <size>' lines")
    try:
        old_size = parse_decimal(lines[1][4:], "old size")
        new_size = parse_decimal(lines[2][4:], "new size")
        proof = tuple(b64decode_strict(line, "consistency proof line") for line in lines[3:])
    except (NoteError, CheckpointError) as exc:
        raise BundleError(str(exc)) from None
    # The first note ends with its last signature line; the second starts with the next line that is not one.
    body = notes.split("\n")
    blank = body.index("") if "" in body else -1
    if blank < 0:
        raise BundleError("the first checkpoint note has no signatures")
    end = blank + 1
    while end < len(body) and body[end].startswith(SIGNATURE_PREFIX):
        end += 1
    old_note = "\n".join(body[:end]) + "\n"
    new_note = "\n".join(body[end:])
    return ConsistencyBundle(None, None, old_size, new_size, proof, old_note, new_note)


def check_consistency(
    text: str | ConsistencyBundle,
    log_vkey: str | NoteVerifier,
    witness_vkeys: Sequence[str | CosignatureVerifier] = (),
    quorum: int = 0,
) -> tuple[Checkpoint, Checkpoint]:
    """Both checkpoints signed by the log (the newer with ``quorum`` cosignatures), of the stated sizes, and the
    proof leading from the old root to the new one; raises ``BundleError``."""
    bundle = parse_consistency(text) if isinstance(text, str) else text
    verifier = _verifier(log_vkey)
    old, _ = _open_checkpoint(bundle.old_note, verifier, (), 0)
    new, _ = _open_checkpoint(bundle.new_note, verifier, _witnesses(witness_vkeys), quorum)
    if (old.size, new.size) != (bundle.old_size, bundle.new_size):
        raise BundleError(f"the checkpoints are of sizes {old.size} and {new.size}, not the stated ones")
    try:
        verify_consistency(old.size, new.size, old.root, new.root, bundle.proof)
    except ProofError as exc:
        raise BundleError(f"checkpoints {old.size} and {new.size} are not consistent: {exc}") from None
    return old, new
