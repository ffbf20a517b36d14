"""``has`` tests that can never be true: typos and misreadings Cedar's validator lets through.

Cedar types ``e has a`` on a closed record without ``a`` as the constant ``false`` — valid, and the policy just
never applies (the Cedar validator's "impossible policy" is a warning, which ``cedarpy`` does not report). For a
``forbid`` that is a rule silently lifted: ``forbid … when { context.user.claims has departmnet && … }`` would
never forbid anything. So such a ``has`` is refused at load like any validation error, where Deputy knows the
type for certain:

* on ``context.user`` or ``context.user.claims``, an attribute the schema does not give them
  (:mod:`deputy.policy.user_attributes`): :func:`impossible_user_tests`;
* on ``context.input`` or a path under it (or a prompt's ``context.arguments``, whose arguments are all tags), an
  attribute that no action the policy's scope may match
  (:mod:`deputy.policy.slices`) declares there (:mod:`deputy.policy.context_types`): a typo such as
  ``context.input.opts has froce``, or a map argument — an object with ``additionalProperties`` is an entity
  whose members are *tags* (:mod:`deputy.policy.arguments`), so ``context.input.env has LD_PRELOAD`` is always
  false and ``context.input.env.hasTag("LD_PRELOAD")`` is the test meant: :func:`impossible_input_tests`. An
  attribute declared — required or optional — by the type of any one of those actions is fine, and so is any
  test whose path this module cannot resolve for one of them: nothing is refused on a guess.

The walk is over the policy's JSON form (the Cedar EST), where ``has`` is ``{"has": {"left": …, "attr": …}}`` and
attribute access ``{".": {"left": …, "attr": …}}`` (``e["a"]`` too; a dotted ``e has a.b`` is already the
``&&`` of ``e has a`` and ``e.a has b`` there), in ``when`` and ``unless`` alike. A ``has`` whose left side is
anything else (``(if … then context.input.a else context.input.b) has x``) is left to Cedar.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Iterator, Sequence
from typing import Any, Final

from deputy.policy.context_types import ContextTypes, Shape, Unresolved
from deputy.policy.slices import action_ancestors, may_match, scope_of
from deputy.policy.sources import PolicyProblem, PolicySource

USER_ATTRIBUTES = frozenset({"name", "email", "groups", "idp", "claims"})
# The arguments a policy reads: a tool's (``context.input``) and a prompt's (``context.arguments``, all tags).
ARGUMENTS: Final = (("context", "input"), ("context", "arguments"))
_IDENTIFIER: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


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


def impossible_input_tests(sources: Sequence[PolicySource], schema_json: str) -> list[PolicyProblem]:
    """One problem per ``has`` on ``context.input`` (or a path under it) naming an attribute that no action the
    policy may apply to declares there; ``schema_json`` is the schema's JSON form."""
    types = ContextTypes(json.loads(schema_json))
    ancestors = action_ancestors(schema_json)
    problems = []
    for source in sources:
        tests = dict.fromkeys(test for test in _tests(source.est.get("conditions", [])) if test[0][:2] in ARGUMENTS)
        if not tests:
            continue
        scope = scope_of(source.est)
        actions = [action for action, above in ancestors.items() if may_match(scope, action, above)]
        for path, attribute in tests:
            why = _never_true(path, attribute, [types.resolve(action, path[1:]) for action in actions])
            if why is not None:
                problems.append(PolicyProblem(source.file, source.line, source.column,
                                              f"policy {source.policy_id!r}: {why}"))
    return problems


def _never_true(path: tuple[str, ...], attribute: str, found: Sequence[Shape | Unresolved]) -> str | None:
    """Why ``<path> has <attribute>`` is false in every request of the actions ``found`` is resolved for, or None
    when it may be true there or that cannot be told."""
    shapes = [f for f in found if isinstance(f, Shape)]
    if Unresolved.UNKNOWN in found or not shapes or any(attribute in shape.attributes for shape in shapes):
        return None
    where, test = _cedar(path), f"{_cedar(path)} has {_name(attribute)}"
    if any(shape.tags for shape in shapes):
        key = _string(attribute)
        return (f"{where} is a map: its members are tags, not attributes, so `{test}` is never true; "
                f"test a member with `{where}.hasTag({key})` and read it with `{where}.getTag({key})`")
    declared = sorted({name for shape in shapes for name in shape.attributes})
    near = difflib.get_close_matches(attribute, declared, n=1)
    hint = f"a typo of {near[0]!r}?" if near else "a typo?"
    return f"no action this policy applies to declares {attribute!r} in {where}, so `{test}` is never true ({hint})"


def _cedar(path: tuple[str, ...]) -> str:
    """``context.input["my-arg"]``: a path as a policy writes it."""
    return path[0] + "".join(f".{part}" if _IDENTIFIER.match(part) else f"[{_string(part)}]" for part in path[1:])


def _name(attribute: str) -> str:
    return attribute if _IDENTIFIER.match(attribute) else _string(attribute)


def _string(text: str) -> str:
    """``text`` as a Cedar string literal, written by JSON: its escapes of ``"`` and ``\\`` are Cedar's (an ASCII
    control, which no argument name has, would show in JSON's form)."""
    return json.dumps(text, ensure_ascii=False)
