"""STUB (issue 15, helper H2 replaces this file): tokens sealed at rest with AES-256-GCM."""

from __future__ import annotations

from pathlib import Path


class VaultKeyError(Exception):
    """A sealed value does not open with any key the vault holds."""


class Vault:
    @classmethod
    def open(cls, data_dir: Path, key: str | None) -> Vault:
        """``key`` (DEPUTY_VAULT_KEY) or the key file in ``data_dir`` (created when absent)."""
        raise NotImplementedError

    def seal(self, plaintext: str, context: str) -> bytes:
        """``plaintext`` sealed, bound to ``context`` (additional authenticated data: e.g. user, server, field)."""
        raise NotImplementedError

    def unseal(self, sealed: bytes, context: str) -> str:
        """The plaintext; :class:`VaultKeyError` when no key opens it or ``context`` differs."""
        raise NotImplementedError
