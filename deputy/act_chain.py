"""Delegation chains: the ``act`` and ``may_act`` claims (RFC 8693 §4.1, §4.4).

``act`` is a JSON object naming the party acting for the token's subject; a nested
``act`` inside it names the party that acted before, so the outermost object is the
*current* actor and the innermost the first. ``exp``, ``nbf`` and ``aud`` never
appear inside ``act`` (§4.1). Deputy writes ``sub``, ``client_id`` and ``iss`` for
each actor, and ``iss`` is who vouches for that hop: Deputy's issuer on every hop it
minted; on a hop that came in the chain of an outside subject token, that outside
issuer — always, whatever ``iss`` the outside token wrote into the hop
(:mod:`deputy.oauth.grants.token_exchange`), so no outside issuer can label a hop as
Deputy's (and its ``client_id``, if any, is a client of that issuer, not of Deputy).
Because each hop names who vouched for it, the whole chain — not only the current
actor — may be used for decisions; a decision that should trust only Deputy's hops
checks their ``iss``.

``may_act`` names who may act for the subject. RFC 8693 §4.4 gives the shape for one
party (``{"sub": "..."}``); Deputy also writes a member as a list when several
parties may act (``{"client_id": ["agent-a", "agent-b"]}``). A party matches when,
for every member present, its own claim equals the value or is in the list.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

ACTOR_CLAIMS = ("sub", "client_id", "iss")
# Parsing stops here whatever the configured depth: a token nesting deeper is malformed.
MAX_PARSED_DEPTH = 32


class MalformedChain(ValueError):
    """An ``act`` or ``may_act`` claim that is not what RFC 8693 §4 describes."""


@dataclass(frozen=True, slots=True)
class Actor:
    """One hop of a delegation chain: who acted (``sub``), as which client, vouched for by ``iss``."""

    sub: str
    client_id: str | None = None
    iss: str | None = None

    def claim(self) -> dict[str, Any]:
        out: dict[str, Any] = {"sub": self.sub}
        if self.client_id is not None:
            out["client_id"] = self.client_id
        if self.iss is not None:
            out["iss"] = self.iss
        return out

    def describe(self) -> str:
        name = self.sub if self.client_id in (None, self.sub) else f"{self.sub} (client {self.client_id})"
        return f"{name} via {self.iss}" if self.iss else name


def parse_act(value: Any) -> tuple[Actor, ...]:
    """The chain in an ``act`` claim, current actor first; ``()`` when there is none."""
    chain: list[Actor] = []
    while value is not None:
        if not isinstance(value, dict):
            raise MalformedChain("act must be a JSON object")
        if len(chain) >= MAX_PARSED_DEPTH:
            raise MalformedChain("act is nested too deeply")
        if any(name in value for name in ("exp", "nbf", "aud")):
            raise MalformedChain("act must not carry exp, nbf or aud (RFC 8693 §4.1)")
        sub = value.get("sub")
        if not isinstance(sub, str) or not sub:
            raise MalformedChain("every actor needs a sub")
        client_id, iss = value.get("client_id"), value.get("iss")
        if not (client_id is None or isinstance(client_id, str)) or not (iss is None or isinstance(iss, str)):
            raise MalformedChain("an actor's client_id and iss are strings")
        chain.append(Actor(sub, client_id, iss))
        value = value.get("act")
    return tuple(chain)


def act_claim(chain: Iterable[Actor]) -> dict[str, Any] | None:
    """The nested ``act`` claim for ``chain`` (current actor first); None for an empty chain."""
    claim: dict[str, Any] | None = None
    for actor in reversed(tuple(chain)):
        outer = actor.claim()
        if claim is not None:
            outer["act"] = claim
        claim = outer
    return claim


def may_act_claim(client_ids: Iterable[str]) -> dict[str, Any] | None:
    """``may_act`` naming the clients that may act for a token's subject; None when nobody may."""
    names = sorted(set(client_ids))
    if not names:
        return None
    return {"client_id": names[0] if len(names) == 1 else names}


def may_act_allows(may_act: Any, actor: Actor) -> bool:
    """Whether ``actor`` is a party ``may_act`` admits (every member present must match)."""
    if not isinstance(may_act, Mapping) or not may_act:
        return False
    own = actor.claim()
    for name, allowed in may_act.items():
        if name not in ACTOR_CLAIMS:
            return False  # a condition Deputy cannot check is not met
        value = own.get(name)
        if isinstance(allowed, str):
            if value != allowed:
                return False
        elif isinstance(allowed, list) and all(isinstance(a, str) for a in allowed):
            if value not in allowed:
                return False
        else:
            return False
    return True
