"""Per-action policy sets: for each action, only the policies whose action scope can match it.

Cedar evaluates every policy of the set it is given on every request, so the cost of a decision grows with the
whole set (bench/results/scaling.md: ~2 µs a policy). A policy whose scope does not match the request is *not
applicable*: Cedar neither evaluates its conditions nor counts it (Cedar authorization semantics,
https://docs.cedarpolicy.com/auth/authorization.html, "a policy is satisfied when its scope and conditions
match"; an error can only come from evaluating a condition). Giving Cedar only the policies whose action scope
can match the request's action therefore yields the same decision, the same determining policies and the same
errors.

The action scope is read from Cedar's JSON policy format (EST,
https://docs.cedarpolicy.com/policies/json-format.html#action): ``{"op": "All"}``, ``{"op": "==", "entity": E}``,
``{"op": "in", "entity": E}`` or ``{"op": "in", "entities": [E, ...]}``. ``action in G`` matches the action
``A`` when ``A`` is ``G`` or a descendant of ``G`` in the schema's action hierarchy (its ``memberOf``, followed
transitively; JSON schema format, https://docs.cedarpolicy.com/schema/json-schema.html#memberof).

Fail safe: a policy is left out of an action's set only when it certainly cannot match. Any scope form not
listed above, an entity not of type ``Deputy::Action`` or not plainly ``{"type", "id"}``, and any action whose
``memberOf`` this module cannot read with certainty keep every policy (such an action gets the whole set).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

import cedarpy

from deputy.policy.schema import ACTION_TYPE, NAMESPACE

_EQUALS: Final = "=="
_IN: Final = "in"


def _action_id(entity: Any) -> str | None:
    """The id of a ``Deputy::Action`` entity reference, or None when it is anything else."""
    if type(entity) is dict and entity.keys() == {"type", "id"} and entity["type"] == ACTION_TYPE \
            and type(entity["id"]) is str:
        return str(entity["id"])
    return None


def scope_of(est: Mapping[str, Any]) -> tuple[str, frozenset[str]] | None:
    """(``==`` or ``in``, the action ids named) of a policy's EST; None: it may match any action."""
    scope = est.get("action")
    if type(scope) is not dict:
        return None
    op = scope.get("op")
    if op in (_EQUALS, _IN) and scope.keys() == {"op", "entity"}:
        named = [_action_id(scope["entity"])]
    elif op == _IN and scope.keys() == {"op", "entities"} and type(scope["entities"]) is list:
        named = [_action_id(entity) for entity in scope["entities"]]
    else:  # "All", or a form not known here
        return None
    ids = [name for name in named if name is not None]
    if not ids or len(ids) != len(named):  # `in []` matches nothing, but is not worth being clever about
        return None
    return op, frozenset(ids)


def action_ancestors(schema_json: str) -> dict[str, frozenset[str] | None]:
    """Each action of the ``Deputy`` namespace with its ancestors (transitive ``memberOf``); None when an
    ancestor cannot be read with certainty (a typed or malformed ``memberOf`` entry)."""
    document = json.loads(schema_json)
    actions = document.get(NAMESPACE, {}).get("actions", {})
    parents: dict[str, frozenset[str] | None] = {}
    for name, action in actions.items():
        member_of = (action or {}).get("memberOf") or []
        ids: list[str] = []
        for parent in member_of if type(member_of) is list else [None]:
            # An untyped entry is an action of the same namespace; a typed one might name another namespace's.
            if type(parent) is dict and parent.keys() <= {"id", "type"} and type(parent.get("id")) is str \
                    and parent.get("type", ACTION_TYPE) == ACTION_TYPE:
                ids.append(parent["id"])
            else:
                parents[name] = None
                break
        else:
            parents[name] = frozenset(ids)
    ancestors: dict[str, frozenset[str] | None] = {}
    for name in parents:
        seen: set[str] = set()
        pending = [name]
        certain = True
        while pending:
            direct = parents.get(pending.pop())
            if direct is None:
                certain = False
                break
            for parent in direct - seen:
                seen.add(parent)
                pending.append(parent)
        ancestors[name] = frozenset(seen) if certain else None
    return ancestors


def may_match(scope: tuple[str, frozenset[str]] | None, action: str, ancestors: frozenset[str] | None) -> bool:
    """Whether a policy of action ``scope`` may apply to a request for ``action`` (of ``ancestors``)."""
    if scope is None or ancestors is None:
        return True
    op, named = scope
    if op == _EQUALS:
        return action in named
    return action in named or not named.isdisjoint(ancestors)


def action_members(ests: Mapping[str, Mapping[str, Any]], schema_json: str) -> dict[str, tuple[str, ...]]:
    """For each action of the schema whose hierarchy is certain, the ids of the policies (id → EST, order kept)
    that may apply to it; an action left out is to be decided on the whole set."""
    scopes = {policy_id: scope_of(est) for policy_id, est in ests.items()}
    return {action: tuple(pid for pid, scope in scopes.items() if may_match(scope, action, ancestors))
            for action, ancestors in action_ancestors(schema_json).items() if ancestors is not None}


def sliced_policy_sets(ests: Mapping[str, Mapping[str, Any]], schema_json: str) -> dict[str, cedarpy.PolicySet]:
    """:func:`action_members` as one ``PolicySet`` per action; actions with the same policies share one, so there
    are at most as many sets as actions. Raises ValueError if Cedar refuses a set."""
    by_members: dict[tuple[str, ...], cedarpy.PolicySet] = {}
    sets: dict[str, cedarpy.PolicySet] = {}
    for action, members in action_members(ests, schema_json).items():
        if members not in by_members:
            document = {"staticPolicies": {pid: ests[pid] for pid in members}, "templates": {}, "templateLinks": []}
            by_members[members] = cedarpy.PolicySet.from_json_str(json.dumps(document))
        sets[action] = by_members[members]
    return sets
