"""Token signing keys: ES256 (RFC 7518 §3.4), published as a JWK Set (RFC 7517 §5).

Keys live in ``{data_dir}/keys``: one ``<kid>.pem`` per key (mode 0600) and
``keys.json`` listing them with their creation and retirement times. The newest
key signs; a retired key stays in the JWKS until every token it signed has
expired (retired_at + the longest token lifetime), then it is dropped. A running
Deputy notices ``deputy keys rotate`` by watching ``keys.json``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from joserfc.jwk import ECKey, KeySet

from deputy import clock

ALGORITHM = "ES256"
_RELOAD_INTERVAL = 1.0


@dataclass(frozen=True, slots=True)
class KeyEntry:
    kid: str
    created_at: int
    retired_at: int | None


class KeyRing:
    def __init__(self, directory: Path, max_token_lifetime: int) -> None:
        self.directory = directory
        self.max_token_lifetime = max_token_lifetime
        self._index_mtime = -1.0
        self._checked_at = 0.0
        self._signing: ECKey | None = None
        self._public = KeySet([])
        self._jwks: dict[str, Any] = {"keys": []}

    @classmethod
    def open(cls, directory: Path, max_token_lifetime: int) -> KeyRing:
        """Load the key ring, creating the first key when there is none."""
        ring = cls(directory, max_token_lifetime)
        if not ring._index_path.exists():
            ring.rotate()
        ring._load()
        return ring

    @property
    def _index_path(self) -> Path:
        return self.directory / "keys.json"

    def _entries(self) -> list[KeyEntry]:
        if not self._index_path.exists():
            return []
        return [KeyEntry(**e) for e in json.loads(self._index_path.read_text())]

    def rotate(self) -> str:
        """Add a new signing key and retire the current one (its public half stays published)."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        kid = f"{time.strftime('%Y%m%d', time.localtime(clock.wall()))}-{secrets.token_hex(4)}"
        key = ECKey.generate_key("P-256", parameters={"kid": kid, "alg": ALGORITHM, "use": "sig"}, private=True)
        _write_private(self.directory / f"{kid}.pem", key.as_pem(private=True))
        t = clock.now()
        entries = [KeyEntry(e.kid, e.created_at, e.retired_at or t) for e in self._entries()]
        entries.append(KeyEntry(kid, t, None))
        _write_private(self._index_path, json.dumps([dataclasses.asdict(e) for e in entries], indent=2).encode())
        self._load()
        return kid

    def entries(self) -> list[KeyEntry]:
        return self._entries()

    def _load(self) -> None:
        self._index_mtime = self._index_path.stat().st_mtime
        t = clock.wall()
        published: list[Any] = []
        signing: ECKey | None = None
        for entry in self._entries():
            if entry.retired_at is not None and entry.retired_at + self.max_token_lifetime < t:
                continue
            pem = (self.directory / f"{entry.kid}.pem").read_bytes()
            key = ECKey.import_key(pem, parameters={"kid": entry.kid, "alg": ALGORITHM, "use": "sig"})
            published.append(ECKey.import_key(key.as_dict(private=False)))
            if entry.retired_at is None:
                signing = key
        if signing is None:
            raise RuntimeError(f"no active signing key in {self.directory}")
        self._signing = signing
        self._public = KeySet(published)
        self._jwks = {"keys": [k.as_dict(private=False) for k in published]}
        self._checked_at = clock.monotonic()

    def _maybe_reload(self) -> None:
        t = clock.monotonic()
        if t - self._checked_at < _RELOAD_INTERVAL:
            return
        self._checked_at = t
        try:
            mtime = self._index_path.stat().st_mtime
        except OSError:
            return  # keep serving with what is loaded; a vanished index is an operator error
        if mtime != self._index_mtime:
            self._load()

    @property
    def signing_key(self) -> ECKey:
        self._maybe_reload()
        assert self._signing is not None  # set by _load, which open() always runs
        return self._signing

    @property
    def public_keys(self) -> KeySet:
        self._maybe_reload()
        return self._public

    def jwks(self) -> dict[str, Any]:
        self._maybe_reload()
        return self._jwks


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)
