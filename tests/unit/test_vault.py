"""Issue 15, item 2 (token vault): AES-256-GCM sealing of upstream tokens, keys from DEPUTY_VAULT_KEY or vault.key.

Abuse first: a sealed value moved to another row or field, altered anywhere, relabelled with another key's id or
format version, or presented to a vault without its key does not open; a key file others may read, or that is not
keys, is refused with the fix and never echoed; a malformed DEPUTY_VAULT_KEY likewise. Then the format by a
known-answer construction, the key file's creation (0600, at first seal, one key however many processes race),
and rotation (the first key seals, all open; a running vault follows a rotated key file).
"""

from __future__ import annotations

import base64
import os
import stat
from collections.abc import Sequence
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from deputy.config_values import ConfigError
from deputy.connections.vault import (
    HEADER_BYTES,
    KEY_FILE,
    KeyFile,
    Vault,
    VaultKeyError,
    environment_keys,
    key_id,
    new_key,
    parse_key,
)
from deputy.storage.connections import client_secret_context, token_context

TOKEN = "gho_upstream-access-token-0123456789"
ALICE_ACCESS = token_context("alice-id", "github", "access_token")
KEY_A = bytes(range(32))
KEY_B = bytes(range(32, 64))


def b64(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).rstrip(b"=").decode()


def vault(*keys: bytes) -> Vault:
    return Vault(list(keys))


# -- a sealed value does not open anywhere else -----------------------------------------------------------------

OTHER_PLACES: Sequence[str] = (
    token_context("bob-id", "github", "access_token"),  # another user's row
    token_context("alice-id", "linear", "access_token"),  # another server
    token_context("alice-id", "github", "refresh_token"),  # another field of the same row
    client_secret_context("github", "https://github.com/login/oauth"),  # a client secret
    "",
)


@pytest.mark.parametrize("context", OTHER_PLACES)
def test_value_moved_to_another_row_or_field_does_not_open(context: str) -> None:
    sealed = vault(KEY_A).seal(TOKEN, ALICE_ACCESS)
    with pytest.raises(VaultKeyError):
        vault(KEY_A).unseal(sealed, context)


def test_contexts_of_different_rows_never_coincide() -> None:
    """A user id or server that ends where another begins cannot make two rows' contexts equal."""
    assert token_context("a", "bc", "access_token") != token_context("ab", "c", "access_token")
    assert client_secret_context("s", "https://as") != client_secret_context("s\x00https:", "//as")


def test_every_altered_byte_is_refused() -> None:
    sealed = vault(KEY_A).seal(TOKEN, ALICE_ACCESS)
    for index in range(len(sealed)):
        altered = bytearray(sealed)
        altered[index] ^= 0x01
        with pytest.raises(VaultKeyError):
            vault(KEY_A).unseal(bytes(altered), ALICE_ACCESS)


def test_truncated_or_extended_value_is_refused() -> None:
    sealed = vault(KEY_A).seal(TOKEN, ALICE_ACCESS)
    for broken in (b"", sealed[:1], sealed[:HEADER_BYTES], sealed[:HEADER_BYTES + 15], sealed[:-1], sealed + b"\x00"):
        with pytest.raises(VaultKeyError):
            vault(KEY_A).unseal(broken, ALICE_ACCESS)


def test_value_relabelled_with_another_key_id_does_not_open() -> None:
    """The key id is authenticated too: swapping in the id of another key the vault holds is refused."""
    sealed = vault(KEY_A).seal(TOKEN, ALICE_ACCESS)
    relabelled = sealed[:1] + key_id(KEY_B) + sealed[1 + len(key_id(KEY_B)):]
    with pytest.raises(VaultKeyError):
        vault(KEY_B, KEY_A).unseal(relabelled, ALICE_ACCESS)


def test_unknown_format_version_is_refused() -> None:
    sealed = vault(KEY_A).seal(TOKEN, ALICE_ACCESS)
    with pytest.raises(VaultKeyError, match="format"):
        vault(KEY_A).unseal(b"\x02" + sealed[1:], ALICE_ACCESS)


def test_vault_without_the_key_says_so_and_never_shows_the_token() -> None:
    sealed = vault(KEY_A).seal(TOKEN, ALICE_ACCESS)
    with pytest.raises(VaultKeyError) as raised:
        vault(KEY_B).unseal(sealed, ALICE_ACCESS)
    assert key_id(KEY_A).hex() in str(raised.value)
    assert "DEPUTY_VAULT_KEY" in str(raised.value)
    assert TOKEN not in str(raised.value)


def test_sealed_value_hides_the_token_and_is_never_the_same_twice() -> None:
    first, second = vault(KEY_A).seal(TOKEN, ALICE_ACCESS), vault(KEY_A).seal(TOKEN, ALICE_ACCESS)
    assert first != second  # a fresh nonce each time
    assert first[1 + 8:HEADER_BYTES] != second[1 + 8:HEADER_BYTES]
    for sealed in (first, second):
        assert TOKEN.encode() not in sealed
        assert b"alice-id" not in sealed  # the context is authenticated, not stored


# -- keys refused ---------------------------------------------------------------------------------------------------

BAD_ENVIRONMENT_KEYS: Sequence[str] = (
    b64(bytes(31)),  # AES-128/192 or a truncated key: not AES-256
    b64(bytes(33)),
    b64(KEY_A) + ",",  # an empty entry
    "," + b64(KEY_A),
    b64(KEY_A)[:-1] + "+",  # base64, not base64url
    "correct horse battery staple",
    b64(KEY_A) + "," + b64(bytes(16)),  # the old key malformed
)


@pytest.mark.parametrize("value", BAD_ENVIRONMENT_KEYS)
def test_malformed_environment_key_is_refused_without_echoing_it(value: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        Vault.open(tmp_path, value)
    assert raised.value.key == "DEPUTY_VAULT_KEY"
    assert all(part not in str(raised.value) for part in value.split(",") if len(part) > 4)
    assert not (tmp_path / KEY_FILE).exists()


@pytest.mark.parametrize("mode", (0o640, 0o604, 0o644, 0o660, 0o606))
def test_key_file_others_may_read_is_refused(mode: int, tmp_path: Path) -> None:
    path = tmp_path / KEY_FILE
    path.write_text(b64(KEY_A) + "\n")
    path.chmod(mode)
    with pytest.raises(ConfigError, match="chmod 600"):
        Vault.open(tmp_path, None)


MALFORMED_FILES: Sequence[bytes] = (
    b"",  # no key at all
    b"\n\n",
    (b64(KEY_A) + "\nnot-a-key\n").encode(),
    b64(bytes(16)).encode() + b"\n",
    b"\xff\xfe" + b64(KEY_A).encode(),
)


@pytest.mark.parametrize("content", MALFORMED_FILES)
def test_malformed_key_file_is_refused_without_echoing_it(content: bytes, tmp_path: Path) -> None:
    path = tmp_path / KEY_FILE
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(ConfigError) as raised:
        Vault.open(tmp_path, None)
    assert b64(KEY_A) not in str(raised.value) and "not-a-key" not in str(raised.value)


def test_key_file_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / KEY_FILE).mkdir(mode=0o700)
    with pytest.raises((ConfigError, IsADirectoryError)):
        Vault.open(tmp_path, None).seal(TOKEN, ALICE_ACCESS)


def test_environment_key_wins_over_a_key_file(tmp_path: Path) -> None:
    KeyFile(tmp_path / KEY_FILE).write([KEY_B])
    sealed = Vault.open(tmp_path, b64(KEY_A)).seal(TOKEN, ALICE_ACCESS)
    assert sealed[1:9] == key_id(KEY_A)


# -- the format --------------------------------------------------------------------------------------------------


def test_known_answer_construction() -> None:
    """A value built by hand from the documented layout opens: version | key id | nonce | AES-256-GCM(ciphertext
    and tag), additional data "deputy vault" NUL version key-id NUL context."""
    nonce = bytes(12)
    header = b"\x01" + key_id(KEY_A) + nonce
    aad = b"deputy vault\x00" + header[:9] + b"\x00" + ALICE_ACCESS.encode()
    built = header + AESGCM(KEY_A).encrypt(nonce, TOKEN.encode(), aad)
    assert vault(KEY_A).unseal(built, ALICE_ACCESS) == TOKEN
    assert key_id(KEY_A) != key_id(KEY_B) and len(key_id(KEY_A)) == 8


def test_new_keys_parse_and_padding_is_optional() -> None:
    key = new_key()
    raw = parse_key(key)
    assert raw is not None and len(raw) == 32
    assert parse_key(key + "=") == raw
    assert environment_keys(f"{key},{b64(KEY_A)},{key}") == [raw, KEY_A]  # a repeated key counts once


# -- the key file ------------------------------------------------------------------------------------------------


def test_key_file_is_created_0600_at_first_seal_not_at_open(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    opened = Vault.open(data_dir, None)
    assert not (data_dir / KEY_FILE).exists()
    with pytest.raises(VaultKeyError):
        opened.unseal(vault(KEY_A).seal(TOKEN, ALICE_ACCESS), ALICE_ACCESS)
    sealed = opened.seal(TOKEN, ALICE_ACCESS)
    assert stat.S_IMODE(os.stat(data_dir / KEY_FILE).st_mode) == 0o600
    assert Vault.open(data_dir, None).unseal(sealed, ALICE_ACCESS) == TOKEN
    assert [p.name for p in data_dir.iterdir() if p.name.startswith(".")] == []  # no draft left behind


def test_processes_creating_the_key_file_at_once_share_one_key(tmp_path: Path) -> None:
    first, second = Vault.open(tmp_path, None), Vault.open(tmp_path, None)
    KeyFile(tmp_path / KEY_FILE).create()  # a third process won the race before either sealed
    one, two = first.seal(TOKEN, ALICE_ACCESS), second.seal(TOKEN, ALICE_ACCESS)
    assert one[1:9] == two[1:9]
    assert second.unseal(one, ALICE_ACCESS) == first.unseal(two, ALICE_ACCESS) == TOKEN


# -- rotation ----------------------------------------------------------------------------------------------------


def test_first_key_seals_and_every_key_opens() -> None:
    old = vault(KEY_A).seal(TOKEN, ALICE_ACCESS)
    rotated = Vault.open(Path("/nonexistent"), f"{b64(KEY_B)},{b64(KEY_A)}")
    assert rotated.unseal(old, ALICE_ACCESS) == TOKEN
    assert not rotated.is_current(old)
    new = rotated.reseal(old, ALICE_ACCESS)
    assert new[1:9] == key_id(KEY_B) and rotated.is_current(new)
    assert vault(KEY_B).unseal(new, ALICE_ACCESS) == TOKEN


def test_running_vault_follows_a_rotated_key_file(tmp_path: Path) -> None:
    """Another process (``deputy vault rotate-key``) puts a new key first: a running Deputy seals under it at once
    and opens what was sealed under it; once the old key is dropped, it no longer opens values under the old."""
    key_file = KeyFile(tmp_path / KEY_FILE)
    key_file.write([KEY_A])
    running = Vault.open(tmp_path, None)
    before = running.seal(TOKEN, ALICE_ACCESS)
    key_file.write([KEY_B, KEY_A])
    elsewhere = vault(KEY_B).seal(TOKEN, ALICE_ACCESS)
    assert running.unseal(elsewhere, ALICE_ACCESS) == TOKEN
    assert running.seal(TOKEN, ALICE_ACCESS)[1:9] == key_id(KEY_B)
    assert running.unseal(before, ALICE_ACCESS) == TOKEN
    key_file.write([KEY_B])
    with pytest.raises(VaultKeyError):
        running.unseal(before, ALICE_ACCESS)
    assert stat.S_IMODE(os.stat(key_file.path).st_mode) == 0o600

