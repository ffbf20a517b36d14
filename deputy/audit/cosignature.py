"""Ed25519 checkpoint cosignatures, per C2SP tlog-cosignature (cosignature/v1).

Section "Format": a cosignature is a note signature line on a checkpoint whose key ID is
``SHA-256(name || "\\n" || 0x04 || 32-byte Ed25519 public key)[:4]`` and whose signature
is a ``timestamped_signature``: an 8-byte big-endian POSIX timestamp (at most 2^63 - 1)
followed by the 64-byte Ed25519 signature. Cosigner vkeys use signature type 0x04.

Section "Ed25519 signed message": the signed message is ``cosignature/v1\\n``, then
``time <timestamp>\\n`` (decimal, no leading zeroes), then the whole checkpoint note text
including extension lines. The message does not commit to the cosigner's name, so each
cosigner must have its own key.

A ``CosignatureVerifier`` is also a note ``Verifier``: ``open_note(checkpoint note +
witness response, [cosigner verifiers])`` checks a witness's cosignatures the way
tlog-witness suggests clients do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from deputy.audit.checkpoint import Checkpoint
from deputy.audit.note import (
    Ed25519PublicKeyName,
    NoteError,
    NoteFormatError,
    NoteVerificationError,
    check_name,
    format_signer_key,
    parse_signature_line,
    parse_signer_key,
    signature_line,
)

SIG_TYPE_COSIGNATURE = 0x04
MAX_TIMESTAMP = 2**63 - 1
_HEADER = "cosignature/v1\n"


def signed_message(checkpoint_body: str, timestamp: int) -> bytes:
    """What the cosigner signs: header line, time line, then the checkpoint text."""
    return f"{_HEADER}time {timestamp}\n{checkpoint_body}".encode()


def _check_timestamp(timestamp: int) -> None:
    if isinstance(timestamp, bool) or not isinstance(timestamp, int) or not 0 <= timestamp <= MAX_TIMESTAMP:
        raise NoteError(f"cosignature timestamp must be an integer from 0 to {MAX_TIMESTAMP}")


@dataclass(frozen=True)
class CosignatureVerifier(Ed25519PublicKeyName):
    """A cosigner's public key, identified by (name, key ID) with signature type 0x04."""

    SIGNATURE_TYPE: ClassVar[int] = SIG_TYPE_COSIGNATURE

    def timestamp_of(self, text: bytes, signature: bytes) -> int | None:
        """The timestamp of a valid ``timestamped_signature`` over ``text``, else None."""
        if len(signature) != 8 + 64:
            return None
        timestamp = int.from_bytes(signature[:8], "big")
        if timestamp > MAX_TIMESTAMP:
            return None
        try:
            body = text.decode("utf-8")
        except UnicodeDecodeError:
            return None
        try:
            self.public_key.verify(signature[8:], signed_message(body, timestamp))
        except InvalidSignature:
            return None
        return timestamp

    def verify(self, text: bytes, signature: bytes) -> bool:
        """The note ``Verifier`` interface: ``text`` is the checkpoint note text."""
        return self.timestamp_of(text, signature) is not None

    def verify_line(self, checkpoint_body: str, line: str) -> int:
        """Check one cosignature line from this key over the checkpoint; return its timestamp."""
        sig = parse_signature_line(line if line.endswith("\n") else line + "\n")
        if (sig.name, sig.key_id) != (self.name, self.key_id):
            raise NoteVerificationError(f"cosignature is from {sig.name}+{sig.key_id.hex()}, not this key")
        timestamp = self.timestamp_of(checkpoint_body.encode(), sig.signature)
        if timestamp is None:
            raise NoteVerificationError(f"cosignature from {self.name} does not verify")
        return timestamp


@dataclass(frozen=True)
class CosignatureSigner:
    """A witness (cosigner): its name and Ed25519 private key."""

    name: str
    private_key: Ed25519PrivateKey

    def __post_init__(self) -> None:
        check_name(self.name)

    @classmethod
    def generate(cls, name: str) -> CosignatureSigner:
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def from_key(cls, skey: str) -> CosignatureSigner:
        """Parse ``PRIVATE+KEY+name+hex(key ID)+base64(0x04 || seed)``."""
        name, private_key = parse_signer_key(skey, SIG_TYPE_COSIGNATURE)
        return cls(name, private_key)

    def key_string(self) -> str:
        return format_signer_key(self.name, SIG_TYPE_COSIGNATURE, self.private_key)

    def verifier(self) -> CosignatureVerifier:
        return CosignatureVerifier.from_public_key(self.name, self.private_key.public_key())

    def cosign(self, checkpoint_body: str, time: int) -> str:
        """The signature line (ending in a newline) cosigning this checkpoint at ``time``."""
        _check_timestamp(time)
        try:
            # Only checkpoints get cosigned: the signature is a statement about a tree head.
            Checkpoint.parse(checkpoint_body)
        except ValueError as exc:
            raise NoteFormatError(f"not a checkpoint: {exc}") from None
        signature = self.private_key.sign(signed_message(checkpoint_body, time))
        return signature_line(self.name, self.verifier().key_id, time.to_bytes(8, "big") + signature)
