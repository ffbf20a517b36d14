"""The audit log's signing keys over time: a key chain followed through hand-over checkpoints.

C2SP signed-note ("Signatures") lets one note carry several signatures, and a verifier ignores the ones from keys
it does not know. A key rotation uses that: the *hand-over checkpoint* is an ordinary C2SP tlog-checkpoint with one
extension line (tlog-checkpoint, "Note text": extension lines are opaque to those who do not understand them)::

    deputy-audit-key-handover <new vkey>

signed by the outgoing key **and** by the new key (same name, the origin; another key ID). Whoever trusts the old
key checks the old key's signature over the whole text, extension line included, so the old key vouches for the
new one; the new key's own signature shows its holder has it. From the hand-over on, only the new key is accepted:
a retired key (perhaps rotated because it leaked) can no longer sign checkpoints that anyone following the chain
accepts. A checkpoint before the hand-over stays verifiable with the key that signed it.

:class:`LogKeys` holds the chain as epochs ``(from size, keys)``: a verifier starts from the key it trusts and opens
the checkpoints in increasing size, the witness (:mod:`deputy.audit.witness`) does the same for each checkpoint it
cosigns. :class:`HandOverSigner` signs the hand-over note (:mod:`deputy.audit.rotation`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from deputy.audit.checkpoint import Checkpoint, CheckpointError
from deputy.audit.note import (
    NoteError,
    NoteFormatError,
    NoteSigner,
    NoteVerificationError,
    NoteVerifier,
    ParsedNote,
    Verifier,
    parse_note,
    verify_note,
)

HANDOVER = "deputy-audit-key-handover"


def handover_key(checkpoint: Checkpoint) -> NoteVerifier | None:
    """The new key a hand-over checkpoint names, or None; raises ``NoteFormatError`` for a malformed line."""
    named = [e for e in checkpoint.extensions if e.split(" ", 1)[0] == HANDOVER]
    if not named:
        return None
    if len(named) > 1:
        raise NoteFormatError("checkpoint names more than one new key")
    _, _, vkey = named[0].partition(" ")
    key = NoteVerifier.from_vkey(vkey)
    if key.name != checkpoint.origin:
        raise NoteFormatError(f"the new key is named {key.name!r}, not the origin {checkpoint.origin!r}")
    return key


def open_checkpoint(parsed: ParsedNote, keys: Iterable[Verifier]) -> tuple[Checkpoint, NoteVerifier | None]:
    """Verify ``parsed`` with ``keys`` and parse it; for a hand-over, also require the new key's signature.

    Returns the checkpoint and the new key it hands over to (None if none). Raises ``NoteError`` or
    ``CheckpointError``."""
    text = verify_note(parsed, keys).text
    checkpoint = Checkpoint.parse(text)
    new = handover_key(checkpoint)
    if new is not None:
        try:
            verify_note(parsed, [new])
        except NoteVerificationError as exc:
            raise NoteVerificationError(f"hand-over checkpoint is not signed by the new key: {exc}") from None
    return checkpoint, new


class LogKeys:
    """The keys accepted for each range of tree sizes, from a trusted start through the hand-overs seen."""

    def __init__(self, start: Sequence[NoteVerifier]) -> None:
        if not start:
            raise ValueError("a log key chain needs at least one start key")
        self.origin = start[0].name
        self.epochs: list[tuple[int, tuple[NoteVerifier, ...]]] = [(0, tuple(start))]
        # The whole chain as the key files state it (oldest first, ending at the key that signs now), when known:
        # the checkpoints must follow exactly it. A retired key that signs a rewritten log with no hand-over, or a
        # hand-over to a key nobody rotated to, then shows (deputy.audit.verify.tree).
        self.expected: tuple[str, ...] | None = None

    @property
    def current(self) -> tuple[NoteVerifier, ...]:
        return self.epochs[-1][1]

    @property
    def name(self) -> str:
        return self.origin

    def vkey(self) -> str:
        return " ".join(k.vkey() for k in self.epochs[0][1])

    def at(self, size: int) -> tuple[NoteVerifier, ...]:
        """The keys that may sign a checkpoint of ``size``: a hand-over's size is signed by both epochs' keys."""
        keys: tuple[NoteVerifier, ...] = self.epochs[0][1]
        for start, epoch_keys in self.epochs:
            if start <= size:
                keys = epoch_keys
        return keys

    def follow(self, note: str) -> Checkpoint:
        """Open the next checkpoint (in increasing size) with the current keys; a valid hand-over moves the chain
        on to its new key. Raises ``NoteError`` or ``CheckpointError``."""
        checkpoint, new = open_checkpoint(parse_note(note), self.current)
        if new is not None and new not in self.current:
            if checkpoint.size < self.epochs[-1][0]:
                raise CheckpointError(f"hand-over at size {checkpoint.size} is older than the previous one")
            self.epochs.append((checkpoint.size, (new,)))
        return checkpoint

    def open_at(self, note: str) -> Checkpoint:
        """Open a checkpoint met outside the chain's order (a trusted one, a witness's) with the keys of its size."""
        parsed = parse_note(note)
        try:
            size = Checkpoint.parse(parsed.text).size
        except CheckpointError:
            size = 0  # opened below with the first keys, then refused by the same parse
        return open_checkpoint(parsed, self.at(size))[0]

    def vkeys(self) -> list[str]:
        """Every key of the chain, oldest first."""
        return [k.vkey() for _, keys in self.epochs for k in keys]


@dataclass(frozen=True)
class HandOverSigner(NoteSigner):
    """Signs a checkpoint body extended with the hand-over line, by the outgoing key and by ``new``."""

    new: NoteSigner | None = None

    def sign(self, text: str) -> str:
        if self.new is None:
            raise NoteError("a hand-over needs the new key")
        body = text + f"{HANDOVER} {self.new.verifier().vkey()}\n"
        return body + "\n" + self.signature_line(body) + self.new.signature_line(body)
