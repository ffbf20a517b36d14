"""C2SP signed-note, tlog-checkpoint and tlog-cosignature (cosignature/v1): known answers and every rejection."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from deputy.audit.checkpoint import Checkpoint, CheckpointError, SignedCheckpoint
from deputy.audit.cosignature import CosignatureSigner, CosignatureVerifier, signed_message
from deputy.audit.note import (
    MAX_SIGNATURES,
    NoteError,
    NoteFormatError,
    NoteSigner,
    NoteVerificationError,
    NoteVerifier,
    check_name,
    generate_signer_key,
    open_note,
    parse_note,
)

# Known-answer key and note from golang.org/x/mod/sumdb/note, note_test.go (TestNewSigner, TestSign).
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PETER_TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
PETER_SIG = (
    "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)
PETER_NOTE = PETER_TEXT + "\n" + PETER_SIG

# The example of C2SP signed-note, section "Verifier keys" / "Example".
SPEC_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_NOTE = (
    "This is an example message.\n\n— example.com/foo "
    "Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
)

ROOT = hashlib.sha256(b"root").digest()


def peter() -> tuple[NoteSigner, NoteVerifier]:
    return NoteSigner.from_key(PETER_SKEY), NoteVerifier.from_vkey(PETER_VKEY)


# --- known answers ---------------------------------------------------------------------------------


def test_known_answer_sign_and_keys() -> None:
    signer, verifier = peter()
    assert signer.sign(PETER_TEXT) == PETER_NOTE
    assert signer.verifier() == verifier
    assert verifier.vkey() == PETER_VKEY
    assert signer.key_string() == PETER_SKEY
    assert verifier.key_id.hex() == "c74f20a3"


def test_known_answer_open() -> None:
    assert open_note(PETER_NOTE, [peter()[1]]) == (PETER_TEXT, ("PeterNeumann",))
    assert open_note(PETER_NOTE.encode(), [peter()[1]]) == (PETER_TEXT, ("PeterNeumann",))


def test_spec_example_verifies() -> None:
    text, names = open_note(SPEC_NOTE, [NoteVerifier.from_vkey(SPEC_VKEY)])
    assert text == "This is an example message.\n"
    assert names == ("example.com/foo",)


def test_key_id_is_sha256_of_name_newline_type_key() -> None:
    _, verifier = peter()
    raw = base64.b64decode(PETER_VKEY.split("+", 2)[2])
    assert raw[0] == 0x01
    assert verifier.key_id == hashlib.sha256(b"PeterNeumann\n" + raw).digest()[:4]


# --- round trips and multiple signatures -----------------------------------------------------------


def test_generated_key_round_trip() -> None:
    signer = NoteSigner.from_key(generate_signer_key("example.com/log"))
    verifier = NoteVerifier.from_vkey(signer.verifier().vkey())
    text = "line one\n\nline three after an empty line\n"
    assert open_note(signer.sign(text), [verifier]) == (text, ("example.com/log",))


def test_text_may_end_in_empty_lines() -> None:
    signer, verifier = peter()
    for text in ("\n", "a\n\n", "a\n\n\n"):
        assert open_note(signer.sign(text), [verifier]).text == text


def test_unknown_keys_are_ignored_even_sharing_name_or_id() -> None:
    _, verifier = peter()
    other = NoteSigner("PeterNeumann", Ed25519PrivateKey.generate())  # same name, other ID
    stranger = NoteSigner("someone.else", Ed25519PrivateKey.generate())
    same_id = "— impostor " + base64.b64encode(verifier.key_id + b"\0" * 64).decode() + "\n"  # same ID, other name
    note = PETER_NOTE + other.signature_line(PETER_TEXT) + stranger.signature_line(PETER_TEXT) + same_id
    assert open_note(note, [verifier]) == (PETER_TEXT, ("PeterNeumann",))


def test_several_known_signatures_are_all_reported() -> None:
    _, verifier = peter()
    second = NoteSigner("example.com/second", Ed25519PrivateKey.generate())
    note = PETER_NOTE + second.signature_line(PETER_TEXT)
    assert open_note(note, [verifier, second.verifier()]).names == ("PeterNeumann", "example.com/second")


def test_only_unknown_signatures_is_rejected() -> None:
    stranger = NoteSigner("someone.else", Ed25519PrivateKey.generate())
    with pytest.raises(NoteVerificationError, match="no signature from a known key"):
        open_note(stranger.sign(PETER_TEXT), [peter()[1]])
    with pytest.raises(NoteVerificationError):
        open_note(PETER_NOTE, [])


def test_known_key_with_bad_signature_rejects_the_note() -> None:
    _, verifier = peter()
    forged = NoteSigner("PeterNeumann", Ed25519PrivateKey.generate())
    # Craft a line that claims Peter's key ID but carries another key's signature.
    bad = "— PeterNeumann " + base64.b64encode(verifier.key_id + forged.private_key.sign(PETER_TEXT.encode())).decode()
    # A valid signature from another known key does not rescue the note.
    second = NoteSigner("example.com/second", Ed25519PrivateKey.generate())
    note = PETER_TEXT + "\n" + second.signature_line(PETER_TEXT) + bad + "\n"
    with pytest.raises(NoteVerificationError, match="does not verify"):
        open_note(note, [verifier, second.verifier()])
    assert open_note(note, [second.verifier()]).names == ("example.com/second",)  # unknown to this client: ignored


def test_tampered_text_fails() -> None:
    tampered = PETER_NOTE.replace("answer", "Answer")
    with pytest.raises(NoteVerificationError, match="does not verify"):
        open_note(tampered, [peter()[1]])


@pytest.mark.parametrize("index", [0, 10, 40, 80])
def test_tampered_signature_fails(index: int) -> None:
    b64 = PETER_SIG.split(" ")[2].strip()
    raw = bytearray(base64.b64decode(b64))
    raw[4 + index % 64] ^= 1
    note = PETER_TEXT + "\n— PeterNeumann " + base64.b64encode(bytes(raw)).decode() + "\n"
    with pytest.raises(NoteVerificationError):
        open_note(note, [peter()[1]])


def test_duplicate_signature_from_a_known_key_is_rejected() -> None:
    with pytest.raises(NoteVerificationError, match="more than one signature"):
        open_note(PETER_NOTE + PETER_SIG, [peter()[1]])


def test_duplicate_signature_from_an_unknown_key_is_ignored() -> None:
    stranger = NoteSigner("someone.else", Ed25519PrivateKey.generate()).signature_line(PETER_TEXT)
    assert open_note(PETER_NOTE + stranger + stranger, [peter()[1]]).names == ("PeterNeumann",)


def test_duplicate_verifier_keys_are_refused() -> None:
    _, verifier = peter()
    with pytest.raises(NoteError, match="share name"):
        open_note(PETER_NOTE, [verifier, verifier])


def test_signature_count_is_bounded() -> None:
    stranger = NoteSigner("someone.else", Ed25519PrivateKey.generate()).signature_line(PETER_TEXT)
    assert open_note(PETER_NOTE + stranger * 15, [peter()[1]]).names == ("PeterNeumann",)  # 16 must be accepted
    with pytest.raises(NoteFormatError, match="more than"):
        open_note(PETER_NOTE + stranger * MAX_SIGNATURES, [peter()[1]])


# --- parse errors ----------------------------------------------------------------------------------

GOOD_LINE = PETER_SIG


@pytest.mark.parametrize(
    ("note", "message"),
    [
        (PETER_NOTE[:-1], "end with a newline"),
        (PETER_TEXT + PETER_SIG, "no blank line"),
        ("no blank line\n", "no blank line"),
        (PETER_TEXT + "\n", "no signatures"),
        (PETER_TEXT + "\n\n", "no signatures"),
        (PETER_NOTE.replace("\n", "\r\n"), "control character"),
        (PETER_NOTE.replace("problem,", "problem,\t"), "control character"),
        (PETER_NOTE.replace("problem,", "problem,\x00"), "control character"),
        (PETER_NOTE.replace("problem,", "problem,\ud800"), "UTF-8"),
        (PETER_TEXT + "\n- PeterNeumann x08g\n", "em dash"),
        (PETER_TEXT + "\n—PeterNeumann x08g\n", "em dash"),
        (PETER_TEXT + "\n" + GOOD_LINE.replace("— ", "—  "), "one space"),
        (PETER_TEXT + "\n" + GOOD_LINE.replace("Neumann ", "Neumann  "), "one space"),
        (PETER_TEXT + "\n" + GOOD_LINE.rstrip("\n") + " extra\n", "one space"),
        (PETER_TEXT + "\n— PeterNeumann\n", "one space"),
        (PETER_TEXT + "\n— PeterNeumann not*base64\n", "base64"),
        (PETER_TEXT + "\n— PeterNeumann " + GOOD_LINE.split(" ")[2].rstrip("=\n") + "\n", "base64"),
        (PETER_TEXT + "\n— PeterNeumann AAAA\n", "too short"),
        (PETER_TEXT + "\n— Peter+Neumann " + GOOD_LINE.split(" ")[2], "'\\+'"),
        (PETER_TEXT + "\n— Peter\u00a0Neumann " + GOOD_LINE.split(" ")[2], "space"),
    ],
)
def test_malformed_notes(note: str, message: str) -> None:
    with pytest.raises(NoteFormatError, match=message):
        open_note(note, [peter()[1]])


def test_invalid_utf8_bytes_rejected() -> None:
    with pytest.raises(NoteFormatError, match="UTF-8"):
        open_note(PETER_NOTE.encode().replace(b"cryptography", b"crypt\xffgraphy"), [peter()[1]])


def test_non_canonical_base64_signature_rejected() -> None:
    b64 = PETER_SIG.split(" ")[2].strip()
    # The last character before '=' carries two unused bits; setting them is another spelling of the same bytes.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = b64[-2]
    mangled = b64[:-2] + alphabet[alphabet.index(last) | 1] + "="
    assert mangled != b64 and base64.b64decode(mangled) == base64.b64decode(b64)
    with pytest.raises(NoteFormatError, match="canonical"):
        open_note(PETER_TEXT + "\n— PeterNeumann " + mangled + "\n", [peter()[1]])


def test_parse_note_splits_at_last_blank_line() -> None:
    parsed = parse_note("a\n\nb\n\n" + GOOD_LINE)
    assert parsed.text == "a\n\nb\n"
    assert [s.name for s in parsed.signatures] == ["PeterNeumann"]


@pytest.mark.parametrize("text", ["", "no newline", "tab\there\n", "cr\r\n", "nul\x00\n"])
def test_signer_refuses_invalid_text(text: str) -> None:
    with pytest.raises(NoteFormatError):
        peter()[0].sign(text)


# --- names and keys --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["", "a+b", "a b", "a\tb", "a\u2003b", "a\u00a0b", "a\nb", "a\x01b", "\ud800"])
def test_bad_names(name: str) -> None:
    with pytest.raises(NoteFormatError):
        check_name(name)
    with pytest.raises(NoteFormatError):
        NoteSigner(name, Ed25519PrivateKey.generate())


@pytest.mark.parametrize("name", ["a", "example.com/log42", "oid/1.3.6.1", "Ünïcødé/名前"])
def test_good_names(name: str) -> None:
    check_name(name)
    signer = NoteSigner.from_key(generate_signer_key(name))
    assert NoteVerifier.from_vkey(signer.verifier().vkey()).name == name


@pytest.mark.parametrize(
    "vkey",
    [
        "PeterNeumann+c74f20a3",  # no key
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # wrong key ID
        "PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # uppercase hex
        "PeterNeumann+c74f20a+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # short hex
        "Peter+Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # '+' in name
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10T",  # truncated base64
        # From note_test.go: a wrong-length key and an unknown algorithm, each with a matching key ID.
        "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY==",
        "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ],
)
def test_bad_vkeys(vkey: str) -> None:
    with pytest.raises(NoteFormatError):
        NoteVerifier.from_vkey(vkey)


def test_every_single_byte_change_of_the_vkey_is_rejected() -> None:
    for i in range(len(PETER_VKEY)):
        mangled = PETER_VKEY[:i] + chr(ord(PETER_VKEY[i]) + 1) + PETER_VKEY[i + 1 :]
        with pytest.raises(NoteFormatError):
            NoteVerifier.from_vkey(mangled)


def test_bad_signer_keys() -> None:
    with pytest.raises(NoteFormatError, match="PRIVATE"):
        NoteSigner.from_key(PETER_SKEY.removeprefix("PRIVATE+KEY+"))
    with pytest.raises(NoteFormatError, match="key ID"):
        NoteSigner.from_key(PETER_SKEY.replace("c74f20a3", "c74f20a4"))
    with pytest.raises(NoteFormatError):  # a cosigner key is not a note key
        NoteSigner.from_key(CosignatureSigner.generate("w").key_string())


# --- checkpoints -----------------------------------------------------------------------------------


def test_checkpoint_body_and_parse() -> None:
    cp = Checkpoint("example.com/log", 20852163, ROOT, ("ext one", "ext two"))
    body = cp.body()
    assert body == f"example.com/log\n20852163\n{base64.b64encode(ROOT).decode()}\next one\next two\n"
    assert Checkpoint.parse(body) == cp
    assert Checkpoint.parse("o\n0\n" + base64.b64encode(ROOT).decode() + "\n").size == 0


def test_spec_example_checkpoint_parses() -> None:
    cp = Checkpoint.parse("example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n")
    assert (cp.origin, cp.size, len(cp.root)) == ("example.com/behind-the-sofa", 20852163, 32)


R = base64.b64encode(ROOT).decode()


@pytest.mark.parametrize(
    "body",
    [
        f"o\n1\n{R}",  # no final newline
        "o\n1\n",  # no root line
        f"\n1\n{R}\n",  # empty origin
        f"o\n01\n{R}\n",  # leading zero
        f"o\n+1\n{R}\n",  # sign
        f"o\n-1\n{R}\n",
        f"o\n 1\n{R}\n",
        f"o\n1_0\n{R}\n",
        f"o\n\u0661\n{R}\n",  # non-ASCII digit (ARABIC-INDIC DIGIT ONE)
        f"o\n\n{R}\n",  # empty size
        f"o\n{2**63}\n{R}\n",  # too large to store
        f"o\n1\n{base64.b64encode(ROOT[:31]).decode()}\n",  # 31-byte root
        f"o\n1\n{R[:-1]}\n",  # bad base64
        f"o\n1\n{R}\n\n",  # empty extension line
        f"o\n1\n{R}\next\n\nmore\n",
        f"o\r\n1\n{R}\n",  # CR
    ],
)
def test_checkpoint_parse_errors(body: str) -> None:
    with pytest.raises(CheckpointError):
        Checkpoint.parse(body)


def test_checkpoint_constructor_validates() -> None:
    for bad in (("", 1, ROOT), ("o", -1, ROOT), ("o", 1, ROOT[:5]), ("o\nx", 1, ROOT), ("o", True, ROOT)):
        with pytest.raises(CheckpointError):
            Checkpoint(*bad)
    with pytest.raises(CheckpointError):
        Checkpoint("o", 1, ROOT, ("",))


def test_signed_checkpoint_round_trip_and_wrong_key() -> None:
    signer = NoteSigner.from_key(generate_signer_key("example.com/log"))
    signed = SignedCheckpoint.sign(Checkpoint("example.com/log", 5, ROOT), signer)
    opened = SignedCheckpoint.open(signed.note, [signer.verifier()])
    assert opened.checkpoint == Checkpoint("example.com/log", 5, ROOT)
    assert opened.signers == ("example.com/log",)
    other = NoteSigner.from_key(generate_signer_key("example.com/log")).verifier()
    with pytest.raises(NoteVerificationError):
        SignedCheckpoint.open(signed.note, [other])
    not_a_checkpoint = signer.sign("just\ntwo lines\n")
    with pytest.raises(CheckpointError):
        SignedCheckpoint.open(not_a_checkpoint, [signer.verifier()])


# --- cosignatures ----------------------------------------------------------------------------------

BODY = Checkpoint("example.com/behind-the-sofa", 20852163, ROOT).body()


def test_signed_message_layout() -> None:
    # tlog-cosignature, "Ed25519 signed message": header, time line, then the checkpoint text.
    assert signed_message(BODY, 1679315147) == b"cosignature/v1\ntime 1679315147\n" + BODY.encode()


def test_cosignature_round_trip() -> None:
    signer = CosignatureSigner.generate("witness.example.com/w1")
    verifier = CosignatureVerifier.from_vkey(signer.verifier().vkey())
    line = signer.cosign(BODY, 1679315147)
    assert line.startswith("— witness.example.com/w1 ") and line.endswith("\n")
    raw = base64.b64decode(line.split(" ")[2])
    assert len(raw) == 4 + 8 + 64
    assert raw[4:12] == (1679315147).to_bytes(8, "big")
    assert verifier.verify_line(BODY, line) == 1679315147
    # A client checks a witness response by appending it to the checkpoint note.
    log = NoteSigner.from_key(generate_signer_key("example.com/behind-the-sofa"))
    assert open_note(log.sign(BODY) + line, [verifier]).names == ("witness.example.com/w1",)


def test_cosignature_key_id_uses_type_0x04() -> None:
    signer = CosignatureSigner.generate("w")
    pub = signer.verifier().vkey().split("+", 2)[2]
    raw = base64.b64decode(pub)
    assert raw[0] == 0x04
    assert signer.verifier().key_id == hashlib.sha256(b"w\n" + raw).digest()[:4]
    # The same Ed25519 key as a note key (0x01) has another ID, so neither verifies the other's lines.
    note_verifier = NoteVerifier.from_public_key("w", signer.private_key.public_key())
    assert note_verifier.key_id != signer.verifier().key_id
    with pytest.raises(NoteFormatError, match="signature type"):
        CosignatureVerifier.from_vkey(note_verifier.vkey())
    with pytest.raises(NoteFormatError, match="signature type"):
        NoteVerifier.from_vkey(signer.verifier().vkey())


def test_cosigner_key_string_round_trip() -> None:
    signer = CosignatureSigner.generate("witness.example.com/w1")
    again = CosignatureSigner.from_key(signer.key_string())
    assert again.verifier() == signer.verifier()
    with pytest.raises(NoteFormatError):
        CosignatureSigner.from_key(PETER_SKEY)


def test_cosignature_tampering() -> None:
    signer = CosignatureSigner.generate("witness.example.com/w1")
    verifier = signer.verifier()
    line = signer.cosign(BODY, 1679315147)
    other_body = Checkpoint("example.com/behind-the-sofa", 20852164, ROOT).body()
    with pytest.raises(NoteVerificationError):
        verifier.verify_line(other_body, line)
    raw = bytearray(base64.b64decode(line.split(" ")[2]))
    raw[11] ^= 1  # the timestamp is signed too
    with pytest.raises(NoteVerificationError):
        verifier.verify_line(BODY, "— witness.example.com/w1 " + base64.b64encode(bytes(raw)).decode())
    with pytest.raises(NoteVerificationError, match="not this key"):
        CosignatureSigner.generate("witness.example.com/w1").verifier().verify_line(BODY, line)
    with pytest.raises(NoteFormatError):
        verifier.verify_line(BODY, "witness.example.com/w1 AAAA")


def test_cosign_validates_input() -> None:
    signer = CosignatureSigner.generate("w")
    for bad_time in (-1, 2**63, True):
        with pytest.raises(NoteError):
            signer.cosign(BODY, bad_time)
    with pytest.raises(NoteFormatError, match="not a checkpoint"):
        signer.cosign("not\na checkpoint\n", 1)
    assert signer.verifier().verify_line(BODY, signer.cosign(BODY, 2**63 - 1)) == 2**63 - 1
