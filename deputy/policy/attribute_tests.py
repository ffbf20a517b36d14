"""``has`` tests on ``context.user`` that can never be true: a typo Cedar's validator lets through.

Cedar types ``e has a`` on a closed record without ``a`` as the constant ``false`` — valid, and the policy just
never applies (the Cedar validator's "impossible policy" is a warning, which ``cedarpy`` does not report). For a
``forbid`` that is a rule silently lifted: ``forbid … when { context.user.claims has departmnet && … }`` would
never forbid anything. So a ``has`` on ``context.user`` or ``context.user.claims`` naming an attribute the schema
does not give them (:mod:`deputy.policy.user_attributes`) is refused at load like any validation error. The walk
is over the policy's JSON form (the Cedar EST), where ``has`` is ``{"has": {"left": …, "attr": …}}`` and
attribute access ``{".": {"left": …, "attr": …}}``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from deputy.policy.sources import PolicyProblem, PolicySource

USER_ATTRIBUTES = frozenset({"name", "email", "groups", "idp", "claims"})


def _path(expression: Any) -> tuple[str, ...] | None:
    """``("context", "user", …)`` for an attribute path rooted at a variable, else None."""
    if not isinstance(expression, dict):
        return None
    if "Var" in expression and isinstance(expression["Var"], str):
        return (expression["Var"],)
    access = expression.get(".")
    if isinstance(access, dict) and isinstance(access.get("attr"), str):
        left = _path(access.get("left"))
        return None if left is None else (*left, access["attr"])
    return None


def _tests(node: Any) -> Iterator[tuple[tuple[str, ...], str]]:
    if isinstance(node, dict):
        test = node.get("has")
        if isinstance(test, dict) and isinstance(test.get("attr"), str):
            path = _path(test.get("left"))
            if path is not None:
                yield path, test["attr"]
        for value in node.values():
            yield from _tests(value)
    elif isinstance(node, list):
        for value in node:
            yield from _tests(value)


def impossible_user_tests(sources: Sequence[PolicySource], claim_names: Sequence[str]) -> list[PolicyProblem]:
    """One problem per ``has`` on ``context.user`` (or its ``claims``) naming an attribute it cannot have."""
    known = {("context", "user"): USER_ATTRIBUTES, ("context", "user", "claims"): frozenset(claim_names)}
    problems = []
    for source in sources:
        for path, attribute in _tests(source.est.get("conditions", [])):
            if path in known and attribute not in known[path]:
                where = ".".join(path)
                problems.append(PolicyProblem(source.file, source.line, source.column,
                                              f"policy {source.policy_id!r}: {where} has no attribute {attribute!r}, "
                                              f"so `{where} has {attribute}` is never true"))
    return problems
