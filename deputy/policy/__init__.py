"""Cedar policy for Deputy: a schema per upstream, validated policy sets, and decisions.

* :mod:`deputy.policy.schema` — Deputy's stub + the upstream's ``tools/list`` → the Cedar schema.
* :mod:`deputy.policy.arguments` — JSON arguments → Cedar values, exactly as the schema types them.
* :mod:`deputy.policy.argument_problems` — which arguments do not fit and why, bounded, never their values.
* :mod:`deputy.policy.sources` — ``*.cedar`` files: ids, annotations, errors located as file:line:col.
* :mod:`deputy.policy.decision` — outcomes, ``@requires_scope`` / ``@approval`` semantics, fail-closed rules.
* :mod:`deputy.policy.engine` — load, validate, reload and decide.
"""

from deputy.policy.arguments import ArgumentError
from deputy.policy.decision import POLICY_DENIED, Decision, Outcome
from deputy.policy.engine import Caller, LoadedPolicies, PolicyEngine, ReloadResult, load_policies
from deputy.policy.schema import PolicySchema, SchemaError, UnknownAction, build_schema, load_tools
from deputy.policy.sources import PolicyLoadError, PolicyProblem, PolicySource

__all__ = [
    "POLICY_DENIED",
    "ArgumentError",
    "Caller",
    "Decision",
    "LoadedPolicies",
    "Outcome",
    "PolicyEngine",
    "PolicyLoadError",
    "PolicyProblem",
    "PolicySchema",
    "PolicySource",
    "ReloadResult",
    "SchemaError",
    "UnknownAction",
    "build_schema",
    "load_policies",
    "load_tools",
]
