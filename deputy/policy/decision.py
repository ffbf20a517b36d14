"""What a decision says, and how Cedar's answer plus Deputy's annotations become one.

Cedar answers Allow or Deny and names the policies that determined it. Deputy reads
two annotations on ``permit`` policies on top of that:

* ``@requires_scope("a b")``: the permit counts only when the token carries every
  scope named (space-separated). When Cedar allows only through permits whose scopes
  the token lacks, the outcome is ``step_up`` and :attr:`Decision.required_scopes` is
  what is missing for the permit that lacks the fewest (ties: smallest policy id) —
  a client that obtains them can retry. A satisfied ``forbid`` still wins: it is a
  Cedar Deny, and no scope changes that.
* ``@approval("required")``: the permit counts only with a human approval, given by
  another user than the one whose call it is; ``@approval("self")`` lets that user
  approve it too (a deliberate second step, not a second person). When every
  permit that counts carries it, the outcome is ``approval_required`` — or ``allow``
  when the caller presents an approval (``approved=True``); one counting permit
  without it is enough to allow outright (permits are alternatives, as in Cedar).
  Permits the token's scopes satisfy are weighed first: when some of them need an
  approval and others would need more scopes, the outcome is ``approval_required``.

A scope condition written inside a policy (``context.scopes.contains("x")``) is an
ordinary condition: when it fails the permit is simply not satisfied, and no step-up
is offered — use the annotation for scopes a client may go and get.

Fail closed: any error in Cedar's diagnostics — an evaluation error in any policy
(Cedar itself would skip that policy, and a skipped ``forbid`` can leave an Allow), a
request that does not match the schema — makes the outcome ``deny``, with the errors
recorded and the erring policies named as determining.

Arguments that do not fit the tool's input schema are a deny no policy determined: its
``reason`` is ``arguments_invalid`` and it carries the :class:`ArgumentProblem` list
(:mod:`deputy.policy.argument_problems`), which the JSON-RPC error's ``data`` and the audit
record's ``errors`` both show, so a user learns which argument and why, and an auditor
tells it apart from a policy's deny.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final, NamedTuple

import cedarpy

from deputy.policy.argument_problems import REASON as ARGUMENTS_INVALID
from deputy.policy.argument_problems import ArgumentError, ArgumentProblem
from deputy.policy.sources import PolicySource

POLICY_DENIED: Final = -32003
"""The JSON-RPC error code of a request denied by policy (implementation-defined server-error range)."""

_ERRING = re.compile(r"policy `([^`]*)`")


class Outcome(StrEnum):
    ALLOW = "allow"
    DENY = "deny"
    STEP_UP = "step_up"
    APPROVAL_REQUIRED = "approval_required"


@dataclass(frozen=True, slots=True)
class Decision:
    decision_id: str
    outcome: Outcome
    action: str
    server: str
    determining: tuple[str, ...]
    errors: tuple[str, ...]
    policy_version: str
    schema_version: str
    required_scopes: tuple[str, ...] = ()
    approval_required: bool = False
    self_approval: bool = False
    approval_id: str | None = None  # the approval this call proceeds on (used up), if any
    problems: tuple[ArgumentProblem, ...] = ()  # why the arguments do not fit (reason arguments_invalid)
    problems_truncated: bool = False  # there were more problems than listed
    # A denied tools/call of a tool the caller's list does not show: answered as for a tool that is not there (no
    # problems, no policies), so a call cannot reveal what the list hides. The record keeps everything.
    hidden: bool = False

    @property
    def reason(self) -> str | None:
        """``arguments_invalid`` when the arguments do not fit the tool's schema; None for any other decision."""
        return ARGUMENTS_INVALID if self.problems else None

    @property
    def allowed(self) -> bool:
        return self.outcome is Outcome.ALLOW

    def error_message(self) -> str:
        if self.outcome is Outcome.STEP_UP:
            return "denied by policy: needs scope " + " ".join(self.required_scopes)
        if self.outcome is Outcome.APPROVAL_REQUIRED:
            return "denied by policy: needs a human approval"
        if self.problems and not self.hidden:
            return "denied by policy: the arguments do not fit the tool's input schema"
        return "denied by policy"

    def error_data(self) -> dict[str, Any]:
        """``data`` of the JSON-RPC error for a request this decision does not allow: no error texts (see the log)
        but, for arguments that do not fit, ``reason``, ``problems`` (which argument, why) and ``problems_truncated``.
        """
        if self.hidden:
            return {"decision_id": self.decision_id, "outcome": str(self.outcome), "policies": []}
        data: dict[str, Any] = {"decision_id": self.decision_id, "outcome": str(self.outcome),
                                "policies": list(self.determining)}
        if self.required_scopes:
            data["required_scopes"] = list(self.required_scopes)
        if self.problems:
            data["reason"] = ARGUMENTS_INVALID
            data["problems"] = [problem.as_data() for problem in self.problems]
            data["problems_truncated"] = self.problems_truncated
        return data


class Verdict(NamedTuple):
    outcome: Outcome
    determining: tuple[str, ...]
    errors: tuple[str, ...] = ()
    required_scopes: tuple[str, ...] = ()
    approval_required: bool = False
    self_approval: bool = False
    problems: tuple[ArgumentProblem, ...] = ()
    problems_truncated: bool = False


def arguments_invalid(error: ArgumentError) -> Verdict:
    """The deny for arguments that do not fit: no policy determined it; one recorded error per problem."""
    problems = error.problems
    errors = tuple(f"{ARGUMENTS_INVALID}: {p.argument or '(the arguments)'} does not fit the tool's schema: "
                   f"{p.problem}" for p in problems)
    if error.truncated:
        errors += (f"{ARGUMENTS_INVALID}: more problems than these {len(problems)}",)
    return Verdict(Outcome.DENY, (), errors, problems=problems, problems_truncated=error.truncated)


def verdict(result: cedarpy.AuthzResult, sources: Mapping[str, PolicySource], scopes: AbstractSet[str],
            approved: bool) -> Verdict:
    """Cedar's answer to one request, read with Deputy's annotations (see the module docstring)."""
    diagnostics = result.diagnostics
    reasons = tuple(sorted(diagnostics.reasons))
    errors = tuple(diagnostics.errors)
    denied = result.decision is not cedarpy.Decision.Allow
    if errors:
        erring = {name for error in errors for name in _ERRING.findall(error)}
        return Verdict(Outcome.DENY, tuple(sorted(erring | set(reasons if denied else ()))), errors)
    if denied:
        return Verdict(Outcome.DENY, reasons)
    permits = [sources[policy_id] for policy_id in reasons]
    if not any(p.requires_scopes or p.approval for p in permits):
        return Verdict(Outcome.ALLOW, reasons)
    counting = [p for p in permits if p.requires_scopes <= scopes]
    if not counting:
        nearest = min(permits, key=lambda p: (len(p.requires_scopes - scopes), p.policy_id))
        return Verdict(Outcome.STEP_UP, reasons, required_scopes=tuple(sorted(nearest.requires_scopes - scopes)))
    outright = tuple(p.policy_id for p in counting if not p.approval)
    if outright:
        return Verdict(Outcome.ALLOW, outright)
    needing = tuple(p.policy_id for p in counting)
    # Permits are alternatives: one that accepts the user's own approval is enough for it to do.
    return Verdict(Outcome.ALLOW if approved else Outcome.APPROVAL_REQUIRED, needing, approval_required=True,
                   self_approval=any(p.self_approval for p in counting))
