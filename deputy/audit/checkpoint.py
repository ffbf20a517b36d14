"""Transparency log checkpoints, per C2SP tlog-checkpoint (c2sp.org/tlog-checkpoint@v1.0.0).

A checkpoint is a signed note (c2sp.org/signed-note) whose text is, section "Note text":

1. the origin, non-empty;
2. the tree size in ASCII decimal, without leading zeroes (``0`` for the empty tree);
3. the base64 RFC 6962 root hash at that size;
4. optional extension lines, each non-empty.

Parsing is strict so that one checkpoint has exactly one spelling: a witness cosigns the
exact bytes, and two spellings of one tree head would be two different statements.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from deputy.audit.note import (
    NoteError,
    NoteSigner,
    Verifier,
    b64,
    b64decode_strict,
    check_text,
    open_note,
)

HASH_SIZE = 32
# Sizes are stored as signed 64-bit integers (PostgreSQL BIGINT); no real log comes near.
MAX_TREE_SIZE = 2**63 - 1
_DECIMAL = re.compile(r"0|[1-9][0-9]*", re.ASCII)


class CheckpointError(ValueError):
    """A checkpoint body (or its fields) is not well formed."""


def parse_decimal(value: str, what: str, maximum: int = MAX_TREE_SIZE) -> int:
    """ASCII decimal, no sign, no leading zeroes, at most ``maximum``."""
    # int() alone would accept "+1", " 1", "01", "1_000" and non-ASCII digits.
    if not _DECIMAL.fullmatch(value):
        raise CheckpointError(f"{what} must be a decimal number without sign or leading zeroes")
    number = int(value)
    if number > maximum:
        raise CheckpointError(f"{what} is larger than {maximum}")
    return number


@dataclass(frozen=True)
class Checkpoint:
    """A log's tree head: origin, size and root hash (plus optional extension lines)."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin:
            raise CheckpointError("origin must not be empty")
        for what, line in (("origin", self.origin), *(("extension line", e) for e in self.extensions)):
            if not line:
                raise CheckpointError(f"{what} must not be empty")
            if "\n" in line or any(ord(c) < 0x20 for c in line):
                raise CheckpointError(f"{what} must be one line without control characters")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or not 0 <= self.size <= MAX_TREE_SIZE:
            raise CheckpointError(f"tree size must be an integer from 0 to {MAX_TREE_SIZE}")
        if not isinstance(self.root, bytes) or len(self.root) != HASH_SIZE:
            raise CheckpointError(f"root hash must be {HASH_SIZE} bytes")

    def body(self) -> str:
        """The note text: ``origin\\nsize\\nbase64(root)\\n`` and the extension lines."""
        return "".join(f"{line}\n" for line in (self.origin, str(self.size), b64(self.root), *self.extensions))

    @classmethod
    def parse(cls, body: str) -> Checkpoint:
        try:
            check_text(body)
        except NoteError as exc:
            raise CheckpointError(f"checkpoint: {exc}") from None
        lines = body[:-1].split("\n")
        if len(lines) < 3:
            raise CheckpointError("checkpoint must have an origin, a size and a root hash line")
        origin, size, root, *extensions = lines
        try:
            root_hash = b64decode_strict(root, "root hash")
        except NoteError as exc:
            raise CheckpointError(str(exc)) from None
        return cls(origin, parse_decimal(size, "tree size"), root_hash, tuple(extensions))


@dataclass(frozen=True)
class SignedCheckpoint:
    """A checkpoint together with its whole signed note and the verified signer names."""

    checkpoint: Checkpoint
    note: str
    signers: tuple[str, ...] = ()

    @classmethod
    def sign(cls, checkpoint: Checkpoint, signer: NoteSigner) -> SignedCheckpoint:
        return cls(checkpoint, signer.sign(checkpoint.body()), (signer.name,))

    @classmethod
    def open(cls, note: str | bytes, verifiers: Iterable[Verifier]) -> SignedCheckpoint:
        """Verify the note (raises ``NoteError``) and parse its text (raises ``CheckpointError``)."""
        text, names = open_note(note, verifiers)
        if isinstance(note, bytes):
            note = note.decode("utf-8")  # open_note has checked it decodes
        return cls(Checkpoint.parse(text), note, names)
