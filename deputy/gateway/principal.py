"""Who is calling: the one value every later stage (upstream credentials, policy, audit) reads.

"This agent, acting for Alice, for this task": ``user`` is the token's ``sub``
(Alice, or the agent itself when no user is involved), ``agent`` the client that
presented the token, ``actors`` the RFC 8693 ``act`` chain — current actor first,
each hop vouched for by Deputy, which minted it — and ``txn`` the task.
"""

from __future__ import annotations

from dataclasses import dataclass

from deputy.act_chain import Actor


@dataclass(frozen=True, slots=True)
class Principal:
    user: str
    agent: str
    scopes: frozenset[str]
    token_id: str
    server: str
    actors: tuple[Actor, ...] = ()
    txn: str | None = None
    expires_at: int = 0
    grant_id: str | None = None

    @property
    def is_delegated(self) -> bool:
        return bool(self.actors)
