"""Who is calling: the one value every later stage (upstream credentials, policy, audit) reads.

"This agent, acting for Alice, for this task": ``user`` is the token's ``sub``
(Alice, or the agent itself when no user is involved), ``agent`` the client that
presented the token, ``user_attributes`` what the token says of the user (her name, e-mail,
groups, identity provider and carried claims: :mod:`deputy.policy.user_attributes`; for an
exchanged token, the subject's — Alice's — never the actor's), ``actors`` the RFC 8693
``act`` chain — current actor first, each hop vouched for by Deputy, which minted it — and ``txn`` the task.
``expires_at`` and ``auth_time`` are the token's; a token Deputy mints for the
upstream (:mod:`deputy.gateway.upstream_credentials`) never outlives it.
"""

from __future__ import annotations

from dataclasses import dataclass

from deputy.act_chain import Actor
from deputy.policy.user_attributes import NO_USER, UserAttributes


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
    auth_time: int | None = None  # when the user signed in (RFC 9068 §2.2.1); None without a user
    user_attributes: UserAttributes = NO_USER
    issuer: str = ""  # Deputy's, which issued the token: the hops it vouches for are its own clients'

    @property
    def is_delegated(self) -> bool:
        return bool(self.actors)
