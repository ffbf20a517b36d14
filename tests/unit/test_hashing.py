"""Argon2id secrets: verification, and the memory of recently verified client secrets."""

from __future__ import annotations

import pytest

from deputy import hashing


async def test_a_client_secret_verifies_only_against_its_own_hash() -> None:
    stored = hashing.hash_secret("right")
    assert "right" not in stored
    assert await hashing.verify_client_secret(stored, "right") is True
    assert await hashing.verify_client_secret(stored, "wrong") is False
    assert await hashing.verify_client_secret("not-a-hash", "right") is False


async def test_a_verified_secret_is_remembered_but_never_across_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    stored = hashing.hash_secret("agent-secret")
    assert await hashing.verify_client_secret(stored, "agent-secret") is True
    runs: list[str] = []
    real = hashing._matches

    def counting(hash_: str, secret: str) -> bool:
        runs.append(secret)
        return real(hash_, secret)

    monkeypatch.setattr(hashing, "_matches", counting)
    assert await hashing.verify_client_secret(stored, "agent-secret") is True
    assert runs == []  # answered from memory
    rotated = hashing.hash_secret("agent-secret")  # same secret, new salt: a new registration
    assert await hashing.verify_client_secret(rotated, "agent-secret") is True
    assert runs == ["agent-secret"]
    assert await hashing.verify_client_secret(stored, "agent-secret-2") is False
    assert runs == ["agent-secret", "agent-secret-2"]
    assert not any(b"agent-secret" in key for key in hashing._remembered)


async def test_passwords_are_always_checked_in_full(monkeypatch: pytest.MonkeyPatch) -> None:
    stored = hashing.hash_secret("correct horse")
    runs: list[str] = []
    real = hashing._matches

    def counting(hash_: str, secret: str) -> bool:
        runs.append(secret)
        return real(hash_, secret)

    monkeypatch.setattr(hashing, "_matches", counting)
    assert await hashing.verify_password(stored, "correct horse") is True
    assert await hashing.verify_password(stored, "correct horse") is True
    assert await hashing.verify_password(stored, "wrong") is False
    assert runs == ["correct horse", "correct horse", "wrong"]
