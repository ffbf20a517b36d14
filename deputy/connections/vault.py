"""Upstream tokens and client secrets sealed at rest with AES-256-GCM (NIST SP 800-38D; RFC 5116 §5.2
AEAD_AES_256_GCM), through ``cryptography``'s :class:`~cryptography.hazmat.primitives.ciphers.aead.AESGCM`.

A sealed value is ``version (1 byte) | key id (8 bytes) | nonce (12 random bytes) | ciphertext and 16-byte tag``.
The key id is the start of a domain-separated SHA-256 of the key: it says which key opens the value without
trying each, and lets ``deputy vault rotate-key`` find what is not yet under the current key. The additional
authenticated data is the header and the caller's ``context`` — the row and field the value belongs to
(:func:`deputy.storage.connections.token_context`) — so a value moved to another user's row, another server or
another field does not open. A random 96-bit nonce per value keeps far below the 2**32 values per key for which
SP 800-38D §8.3 bounds random nonces.

Keys, 32 random bytes each, written as base64url; the first seals, all open:

- ``DEPUTY_VAULT_KEY`` (``ConnectionSettings.vault_key``): ``KEY`` or, while rotating, ``NEW,OLD`` — for replicas,
  which must share the key;
- else the file ``vault.key`` in the data directory, one key a line, created 0600 when a value is first sealed and
  refused when group or others may read it. A running Deputy reads it again when it changes (a rotation).

Rotation (:func:`reseal_all`; ``deputy vault rotate-key``, :mod:`deputy.cli.vault`): values are opened with the
key they name and sealed again under the first key; rows that changed meanwhile are read again.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import hashlib
import os
import secrets
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from deputy.config_values import ConfigError
from deputy.storage.connections import ConnectionRepository, client_secret_context, token_context

VERSION = b"\x01"
KEY_ID_BYTES = 8
NONCE_BYTES = 12  # 96 bits: GCM's native IV length (SP 800-38D §5.2.1.1)
HEADER_BYTES = len(VERSION) + KEY_ID_BYTES + NONCE_BYTES
KEY_BYTES = 32  # AES-256
KEY_FILE = "vault.key"
ENVIRONMENT = "DEPUTY_VAULT_KEY"
RESEAL_PASSES = 5  # rows changing under the re-sealing this many times in a row: give up, keep the old key


class VaultKeyError(Exception):
    """A sealed value does not open with any key the vault holds."""


def key_id(key: bytes) -> bytes:
    # Domain-separated: the id is never the hash of the key as some other system might publish it.
    return hashlib.sha256(b"deputy vault key id\x00" + key).digest()[:KEY_ID_BYTES]


def new_key() -> str:
    """A fresh key, base64url without padding, as ``DEPUTY_VAULT_KEY`` and the key file hold it."""
    return base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).rstrip(b"=").decode()


def parse_key(text: str) -> bytes | None:
    """The 32 bytes ``text`` (base64url, padding optional) stands for; None when it is not exactly that."""
    text = text.strip()
    if not text or any(c not in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=" for c in text):
        return None
    try:
        raw = base64.urlsafe_b64decode(text.rstrip("=") + "=" * (-len(text.rstrip("=")) % 4))
    except (binascii.Error, ValueError):
        return None
    return raw if len(raw) == KEY_BYTES else None


def environment_keys(value: str) -> list[bytes]:
    """``DEPUTY_VAULT_KEY``: ``KEY`` or ``NEW,OLD,…``; a clear configuration error otherwise (never the value)."""
    keys = []
    parts = value.split(",")
    for index, part in enumerate(parts, 1):
        key = parse_key(part)
        if key is None:
            raise ConfigError(ENVIRONMENT, f"key {index} of {len(parts)} is not base64url of exactly {KEY_BYTES} "
                                           "bytes (make one with `deputy vault rotate-key` or `openssl rand 32 | "
                                           "basenc --base64url`)")
        if key not in keys:
            keys.append(key)
    return keys


class KeyFile:
    """``vault.key`` in the data directory: one base64url key a line, the first sealing; 0600."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def signature(self) -> tuple[int, int, int] | None:
        """What changes when the file is replaced or rewritten; None when there is none."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def read(self) -> list[bytes]:
        """The keys; [] when there is no file. Refused (ConfigError) when others may read it or it is malformed."""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except FileNotFoundError:
            return []
        with os.fdopen(fd, "rb") as handle:
            st = os.fstat(handle.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise ConfigError(str(self.path), "the vault key file is not a regular file")
            if st.st_mode & 0o077:
                raise ConfigError(str(self.path), f"the vault key file may be read by group or others (mode "
                                                  f"{stat.S_IMODE(st.st_mode):04o}); chmod 600 it")
            content = handle.read(64 * 1024)
        try:
            lines = content.decode("ascii").splitlines()
        except UnicodeDecodeError:
            raise ConfigError(str(self.path), "the vault key file is not base64url keys, one a line") from None
        keys: list[bytes] = []
        for number, text in enumerate(lines, 1):
            if not text.strip():
                continue
            key = parse_key(text)
            if key is None:
                raise ConfigError(str(self.path), f"line {number} of the vault key file is not base64url of exactly "
                                                  f"{KEY_BYTES} bytes")
            if key not in keys:
                keys.append(key)
        if not keys:
            raise ConfigError(str(self.path), "the vault key file holds no key")
        return keys

    def create(self) -> None:
        """Write a first key unless a file is there: written whole under another name, then linked into place, so
        no reader sees half a key and of processes creating it at once the first link wins for all."""
        draft = self._draft([secrets.token_bytes(KEY_BYTES)])
        try:
            os.link(draft, self.path)
        except FileExistsError:
            pass
        finally:
            draft.unlink(missing_ok=True)

    def write(self, keys: Sequence[bytes]) -> None:
        """Replace the file with ``keys`` at once (a reader sees the old file or the new one, never a mix)."""
        draft = self._draft(keys)
        try:
            os.replace(draft, self.path)
        finally:
            draft.unlink(missing_ok=True)
        directory = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself survives a crash
        finally:
            os.close(directory)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Held for a whole rotation: two rotations at once would each seal under a key the other drops."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def _draft(self, keys: Sequence[bytes]) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        draft = self.path.with_name(f".{self.path.name}.{secrets.token_hex(8)}.tmp")
        fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(b"".join(base64.urlsafe_b64encode(k).rstrip(b"=") + b"\n" for k in keys))
            handle.flush()
            os.fsync(handle.fileno())
        return draft


class Vault:
    def __init__(self, keys: Sequence[bytes], key_file: KeyFile | None = None) -> None:
        """``keys`` (the first seals); or, with ``key_file``, those of the file, read again when it changes."""
        self._file = key_file
        self._seen = key_file.signature() if key_file is not None else None
        self._install(list(keys) if key_file is None else key_file.read())

    @classmethod
    def open(cls, data_dir: Path, key: str | None) -> Vault:
        """``key`` (DEPUTY_VAULT_KEY) or the key file in ``data_dir`` (created when a value is first sealed)."""
        if key is not None:
            return cls(environment_keys(key))
        return cls([], KeyFile(data_dir / KEY_FILE))

    @property
    def key_file(self) -> KeyFile | None:
        """The key file the keys come from; None when they come from ``DEPUTY_VAULT_KEY``."""
        return self._file

    @property
    def current_key_id(self) -> bytes | None:
        self._reload_if_changed()
        return self._ids[0] if self._ids else None

    def seal(self, plaintext: str, context: str) -> bytes:
        """``plaintext`` sealed, bound to ``context`` (additional authenticated data: e.g. user, server, field)."""
        self._reload_if_changed()
        if not self._ids and self._file is not None:
            self._file.create()
            self._reload_if_changed()
        if not self._ids:
            raise VaultKeyError("the vault holds no key to seal with")
        header = VERSION + self._ids[0] + secrets.token_bytes(NONCE_BYTES)
        return header + self._ciphers[self._ids[0]].encrypt(header[-NONCE_BYTES:], plaintext.encode(),
                                                            _aad(header, context))

    def unseal(self, sealed: bytes, context: str) -> str:
        """The plaintext; :class:`VaultKeyError` when no key opens it or ``context`` differs."""
        if len(sealed) < HEADER_BYTES + 16 or sealed[:1] != VERSION:
            raise VaultKeyError("not a value this vault sealed (unknown format)")
        kid = sealed[1:1 + KEY_ID_BYTES]
        self._reload_if_changed()  # another process may have rotated the key file (one stat)
        cipher = self._ciphers.get(kid)
        if cipher is None:
            raise VaultKeyError(f"sealed with key {kid.hex()}, which the vault does not hold: {self._where()}")
        header = sealed[:HEADER_BYTES]
        try:
            return cipher.decrypt(header[-NONCE_BYTES:], sealed[HEADER_BYTES:], _aad(header, context)).decode()
        except (InvalidTag, UnicodeDecodeError):
            raise VaultKeyError("the value does not open: altered, or sealed for another row or field") from None

    def is_current(self, sealed: bytes) -> bool:
        """Whether ``sealed`` is under the key that seals now (nothing for a rotation to do)."""
        current = self.current_key_id
        return current is not None and sealed[:1] == VERSION and sealed[1:1 + KEY_ID_BYTES] == current

    def reseal(self, sealed: bytes, context: str) -> bytes:
        """The same plaintext sealed under the current key."""
        return self.seal(self.unseal(sealed, context), context)

    def _install(self, keys: list[bytes]) -> None:
        self._ids = [key_id(k) for k in keys]
        self._ciphers = {key_id(k): AESGCM(k) for k in keys}

    def _reload_if_changed(self) -> None:
        if self._file is None:
            return
        signature = self._file.signature()
        if signature != self._seen:
            keys = self._file.read()
            self._seen = signature
            self._install(keys)

    def _where(self) -> str:
        if self._file is None:
            return f"add that key to {ENVIRONMENT} (after the one that seals), or reconnect"
        return f"restore the key file {self._file.path} that held it, or reconnect"


def _aad(header: bytes, context: str) -> bytes:
    return b"deputy vault\x00" + header[:1 + KEY_ID_BYTES] + b"\x00" + context.encode()


@dataclass(frozen=True, slots=True)
class Resealed:
    """What re-sealing did: rows re-sealed under the current key, rows found already under it, rows no key opens."""

    connections: int = 0
    clients: int = 0
    already_current: int = 0
    unreadable: int = 0
    settled: bool = True  # False: rows kept changing under it; the old key must stay


async def reseal_all(vault: Vault, repository: ConnectionRepository) -> Resealed:
    """Seal every stored token and client secret under ``vault``'s first key; idempotent (a value already under it
    is left as is), so a rotation stopped midway is finished by running it again."""
    connections = clients = current = 0
    unreadable: set[tuple[str, str, str]] = set()
    for attempt in range(RESEAL_PASSES):
        first, raced = attempt == 0, 0
        async for row in repository.all_connections():
            if vault.is_current(row.access_token) and (row.refresh_token is None
                                                       or vault.is_current(row.refresh_token)):
                current += 1 if first else 0
                continue
            try:
                access = vault.reseal(row.access_token, token_context(row.user_id, row.server, "access_token"))
                refresh = (vault.reseal(row.refresh_token, token_context(row.user_id, row.server, "refresh_token"))
                           if row.refresh_token is not None else None)
            except VaultKeyError:
                unreadable.add(("connection", row.user_id, row.server))
                continue
            if await repository.reseal_connection(row, access, refresh):
                connections += 1
            else:
                raced += 1
        for client in await repository.all_registered_clients():
            if client.client_secret is None or vault.is_current(client.client_secret):
                current += 1 if first else 0
                continue
            try:
                secret = vault.reseal(client.client_secret, client_secret_context(client.server, client.issuer))
            except VaultKeyError:
                unreadable.add(("client", client.server, client.issuer))
                continue
            if await repository.reseal_client(client, secret):
                clients += 1
            else:
                raced += 1
        if raced == 0:
            return Resealed(connections, clients, current, len(unreadable))
        unreadable.clear()  # counted again by the next pass
    return Resealed(connections, clients, current, len(unreadable), settled=False)
