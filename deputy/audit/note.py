"""Signed notes, per C2SP signed-note (c2sp.org/signed-note@v1.0.0), with Ed25519 keys.

A note is a text ending in a newline, a blank line, then one or more signature lines
``— <key name> base64(key ID || signature)`` (section "Format"). Keys are identified by
the pair (name, 4-byte key ID); the key ID is
``SHA-256(name || 0x0A || signature type || public key)[:4]`` (section "Signatures"),
with signature type 0x01 for Ed25519 (section "Ed25519 signatures").

Verifier keys ("vkeys", section "Verifier keys") are ``name+hex(key ID)+base64(type ||
public key)``. Signer keys use the ``PRIVATE+KEY+name+hex(key ID)+base64(type || seed)``
encoding of golang.org/x/mod/sumdb/note, which the spec does not define but which
is what existing tooling reads and writes.

``open_note`` follows section "Signatures": unknown keys are ignored (even if they share
the name or the ID, but not both, with a known key), a known key whose signature fails
makes the whole note invalid, and at least one known signature must verify.

Errors are ``NoteError``; ``NoteFormatError`` (the text is not a well-formed note or key)
and ``NoteVerificationError`` (well formed, but not validly signed by a known key) let a
server answer them differently (tlog-witness: 400 versus 403).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar, NamedTuple, Protocol, Self

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

SIG_TYPE_ED25519 = 0x01
SIGNATURE_PREFIX = "\u2014 "  # em dash, space
PRIVATE_KEY_PREFIX = "PRIVATE+KEY+"
# The spec requires accepting at least 16 signatures and recommends a cap; 64 leaves room
# for many witness cosignatures while bounding the work an attacker can make us do.
MAX_SIGNATURES = 64

_HEX8 = re.compile(r"[0-9a-f]{8}")


class NoteError(ValueError):
    """A note, key or signature was rejected; the message says why."""


class NoteFormatError(NoteError):
    """The input is not a well-formed note, key or signature line."""


class NoteVerificationError(NoteError):
    """The note is well formed but not validly signed by a known key."""


class Verifier(Protocol):
    """A key that can check note signatures: identified by (name, key ID)."""

    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> bytes: ...

    def verify(self, text: bytes, signature: bytes) -> bool:
        """Whether ``signature`` (without the key ID prefix) is valid over the note text."""
        ...


def check_name(name: str) -> None:
    """Key name rules of section "Format": non-empty, no Unicode spaces, no '+'."""
    if not name:
        raise NoteFormatError("key name is empty")
    if "+" in name:
        raise NoteFormatError(f"key name {name!r} contains '+'")
    # str.isspace covers the Unicode space separators as well as ASCII whitespace.
    if any(c.isspace() for c in name):
        raise NoteFormatError(f"key name {name!r} contains a space")
    # Names end up inside notes, which may hold no control characters at all.
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise NoteFormatError(f"key name {name!r} contains a control character")
    _check_utf8(name, "key name")


def compute_key_id(name: str, sig_type: int, public_key: bytes) -> bytes:
    """``SHA-256(name || 0x0A || type || public key)[:4]`` (the recommended key ID)."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([sig_type]) + public_key).digest()[:4]


def b64decode_strict(value: str, what: str) -> bytes:
    """Standard base64 (RFC 4648 section 4), padded and canonical: one spelling per value."""
    try:
        raw = base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise NoteFormatError(f"{what} is not valid base64") from None
    # b64decode accepts non-zero trailing bits; re-encoding rejects such alternate spellings.
    if base64.b64encode(raw).decode("ascii") != value:
        raise NoteFormatError(f"{what} is not canonical base64")
    return raw


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def parse_vkey(vkey: str, sig_type: int, key_len: int = 32) -> tuple[str, bytes, bytes]:
    """Split a vkey ``name+hex8+base64(type || key)`` into (name, key ID, key material).

    The type byte must be ``sig_type`` and the key ID must be the one computed from the
    name and key, so a vkey cannot claim an identity its key does not have.
    """
    parts = vkey.split("+", 2)  # the base64 part may itself contain "+"
    if len(parts) != 3:
        raise NoteFormatError("verifier key must be name+keyid+key")
    name, hex_id, encoded = parts
    check_name(name)
    if not _HEX8.fullmatch(hex_id):
        raise NoteFormatError("verifier key ID must be 8 lowercase hex digits")
    raw = b64decode_strict(encoded, "verifier key")
    if len(raw) != 1 + key_len:
        raise NoteFormatError(f"verifier key must be 1+{key_len} bytes, got {len(raw)}")
    if raw[0] != sig_type:
        raise NoteFormatError(f"verifier key has signature type 0x{raw[0]:02x}, expected 0x{sig_type:02x}")
    key_id = bytes.fromhex(hex_id)
    if compute_key_id(name, sig_type, raw[1:]) != key_id:
        raise NoteFormatError("verifier key ID does not match its name and key")
    return name, key_id, raw[1:]


def format_vkey(name: str, key_id: bytes, sig_type: int, public_key: bytes) -> str:
    return f"{name}+{key_id.hex()}+{b64(bytes([sig_type]) + public_key)}"


def parse_signer_key(skey: str, sig_type: int) -> tuple[str, Ed25519PrivateKey]:
    """Parse ``PRIVATE+KEY+name+hex8+base64(type || seed)``, checking the key ID."""
    if not skey.startswith(PRIVATE_KEY_PREFIX):
        raise NoteFormatError("signer key must start with PRIVATE+KEY+")
    parts = skey[len(PRIVATE_KEY_PREFIX) :].split("+", 2)  # base64 may contain "+"
    if len(parts) != 3:
        raise NoteFormatError("signer key must be PRIVATE+KEY+name+keyid+key")
    name, hex_id, encoded = parts
    check_name(name)
    if not _HEX8.fullmatch(hex_id):
        raise NoteFormatError("signer key ID must be 8 lowercase hex digits")
    raw = b64decode_strict(encoded, "signer key")
    if len(raw) != 33 or raw[0] != sig_type:
        raise NoteFormatError(f"signer key must be type 0x{sig_type:02x} and a 32-byte seed")
    private_key = Ed25519PrivateKey.from_private_bytes(raw[1:])
    if compute_key_id(name, sig_type, public_bytes(private_key.public_key())) != bytes.fromhex(hex_id):
        raise NoteFormatError("signer key ID does not match its name and key")
    return name, private_key


def format_signer_key(name: str, sig_type: int, private_key: Ed25519PrivateKey) -> str:
    seed = private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    key_id = compute_key_id(name, sig_type, public_bytes(private_key.public_key()))
    return f"{PRIVATE_KEY_PREFIX}{name}+{key_id.hex()}+{b64(bytes([sig_type]) + seed)}"


def public_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


def signature_line(name: str, key_id: bytes, signature: bytes) -> str:
    return f"{SIGNATURE_PREFIX}{name} {b64(key_id + signature)}\n"


@dataclass(frozen=True)
class Ed25519PublicKeyName:
    """A named Ed25519 public key of one signature type (:attr:`SIGNATURE_TYPE`), read from and printed as a vkey."""

    SIGNATURE_TYPE: ClassVar[int]
    name: str
    key_id: bytes
    public_key: Ed25519PublicKey

    @classmethod
    def from_vkey(cls, vkey: str) -> Self:
        name, key_id, material = parse_vkey(vkey, cls.SIGNATURE_TYPE)
        return cls(name, key_id, Ed25519PublicKey.from_public_bytes(material))

    @classmethod
    def from_public_key(cls, name: str, public_key: Ed25519PublicKey) -> Self:
        check_name(name)
        return cls(name, compute_key_id(name, cls.SIGNATURE_TYPE, public_bytes(public_key)), public_key)

    def vkey(self) -> str:
        return format_vkey(self.name, self.key_id, self.SIGNATURE_TYPE, public_bytes(self.public_key))


@dataclass(frozen=True)
class NoteVerifier(Ed25519PublicKeyName):
    """An Ed25519 (type 0x01) note verifier key."""

    SIGNATURE_TYPE: ClassVar[int] = SIG_TYPE_ED25519

    def verify(self, text: bytes, signature: bytes) -> bool:
        if len(signature) != 64:
            return False
        try:
            self.public_key.verify(signature, text)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class NoteSigner:
    """An Ed25519 (type 0x01) note signer: a key name and a private key."""

    name: str
    private_key: Ed25519PrivateKey

    def __post_init__(self) -> None:
        check_name(self.name)

    @classmethod
    def from_key(cls, skey: str) -> NoteSigner:
        name, private_key = parse_signer_key(skey, SIG_TYPE_ED25519)
        return cls(name, private_key)

    def key_string(self) -> str:
        return format_signer_key(self.name, SIG_TYPE_ED25519, self.private_key)

    def verifier(self) -> NoteVerifier:
        return NoteVerifier.from_public_key(self.name, self.private_key.public_key())

    @property
    def key_id(self) -> bytes:
        return self.verifier().key_id

    def signature_line(self, text: str) -> str:
        """The signature line for ``text`` (checked to be a valid note text)."""
        check_text(text)
        return signature_line(self.name, self.key_id, self.private_key.sign(text.encode()))

    def sign(self, text: str) -> str:
        """The whole signed note: text, blank line, one signature line."""
        return text + "\n" + self.signature_line(text)


def generate_signer_key(name: str) -> str:
    """A new random Ed25519 signer key string; ``NoteSigner.from_key(...).verifier().vkey()`` gives its vkey."""
    return NoteSigner(name, Ed25519PrivateKey.generate()).key_string()


def _check_utf8(value: str, what: str) -> None:
    # A Python str can hold lone surrogates, which have no UTF-8 encoding.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise NoteFormatError(f"{what} is not valid UTF-8") from None


def _check_controls(value: str, what: str) -> None:
    for c in value:
        if ord(c) < 0x20 and c != "\n":
            raise NoteFormatError(f"{what} contains control character U+{ord(c):04X}")


def check_text(text: str) -> None:
    """A note text: valid UTF-8, no control characters but newline, ending in a newline."""
    _check_utf8(text, "note text")
    _check_controls(text, "note text")
    if not text.endswith("\n"):
        raise NoteFormatError("note text must end with a newline")


class NoteSignature(NamedTuple):
    """One parsed signature line."""

    name: str
    key_id: bytes
    signature: bytes  # without the key ID
    line: str  # as it appeared, with its newline


class ParsedNote(NamedTuple):
    text: str
    signatures: tuple[NoteSignature, ...]


class OpenedNote(NamedTuple):
    text: str
    names: tuple[str, ...]  # key names of the known signatures that verified, in note order


def parse_note(note: str | bytes) -> ParsedNote:
    """Split a note into its text and signature lines without verifying anything."""
    if isinstance(note, bytes):
        try:
            note = note.decode("utf-8")
        except UnicodeDecodeError:
            raise NoteFormatError("note is not valid UTF-8") from None
    _check_utf8(note, "note")
    _check_controls(note, "note")
    if not note.endswith("\n"):
        raise NoteFormatError("note must end with a newline")
    # The text is separated from the signatures by the last empty line.
    split = note.rfind("\n\n")
    if split < 0:
        raise NoteFormatError("note has no blank line before its signatures")
    text, block = note[: split + 1], note[split + 2 :]
    if not block:
        raise NoteFormatError("note has no signatures")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteFormatError(f"note has more than {MAX_SIGNATURES} signatures")
    return ParsedNote(text, tuple(parse_signature_line(line + "\n") for line in lines))


def parse_signature_line(line: str) -> NoteSignature:
    """Parse ``— <name> <base64(key ID || signature)>`` followed by a newline."""
    if not line.endswith("\n") or "\n" in line[:-1]:
        raise NoteFormatError("signature line must be one line ending in a newline")
    if not line.startswith(SIGNATURE_PREFIX):
        raise NoteFormatError("signature line must start with an em dash and a space")
    fields = line[len(SIGNATURE_PREFIX) : -1].split(" ")
    if len(fields) != 2:
        raise NoteFormatError("signature line must be a key name and a signature separated by one space")
    name, encoded = fields
    check_name(name)
    raw = b64decode_strict(encoded, f"signature of {name}")
    if len(raw) < 5:
        raise NoteFormatError(f"signature of {name} is too short")
    return NoteSignature(name, raw[:4], raw[4:], line)


def verify_note(parsed: ParsedNote, verifiers: Iterable[Verifier]) -> OpenedNote:
    """Check a parsed note's signatures against known keys (section "Signatures")."""
    known: dict[tuple[str, bytes], Verifier] = {}
    for v in verifiers:
        if (v.name, v.key_id) in known:
            # Two keys with one identity would make "the" key for a signature ambiguous.
            raise NoteError(f"two verifier keys share name {v.name} and key ID {v.key_id.hex()}")
        known[(v.name, v.key_id)] = v
    text = parsed.text.encode()
    seen: set[tuple[str, bytes]] = set()
    good: list[NoteSignature] = []
    for sig in parsed.signatures:
        verifier = known.get((sig.name, sig.key_id))
        if verifier is None:
            continue  # unknown keys MUST be ignored, even if name or ID alone match
        if (sig.name, sig.key_id) in seen:
            # A key signs a note once; a second line from it is malformed, not a bonus vote.
            raise NoteVerificationError(f"more than one signature from key {sig.name}+{sig.key_id.hex()}")
        seen.add((sig.name, sig.key_id))
        if not verifier.verify(text, sig.signature):
            raise NoteVerificationError(f"signature from known key {sig.name}+{sig.key_id.hex()} does not verify")
        good.append(sig)
    if not good:
        raise NoteVerificationError("note has no signature from a known key")
    return OpenedNote(parsed.text, tuple(s.name for s in good))


def open_note(note: str | bytes, verifiers: Iterable[Verifier]) -> OpenedNote:
    """Parse and verify a signed note; returns (text, names of the known keys whose signatures verified)."""
    return verify_note(parse_note(note), verifiers)
