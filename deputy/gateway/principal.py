"""Who is calling: the one value every later stage (policy, audit) reads."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Principal:
    user: str
    agent: str
    scopes: frozenset[str]
    token_id: str
    server: str
    actors: tuple[str, ...] = ()
    txn: str | None = None
