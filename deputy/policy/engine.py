"""The policy engine of one upstream server: a validated, pre-parsed policy set and decisions.

Start: :class:`PolicyEngine` reads ``*.cedar`` from its directory
(:mod:`deputy.policy.sources`), validates the whole set against the server's schema
(:mod:`deputy.policy.schema`) and parses it once into a ``cedarpy.PolicySet`` whose
policy ids are Deputy's (``@id`` or ``file#n``); any problem raises
:class:`~deputy.policy.sources.PolicyLoadError`, each line ``file:line:col: message``,
and start-up stops. :meth:`PolicyEngine.reload` (policies edited) and
:meth:`PolicyEngine.use_schema` (the server's tools changed) build a new set the same
way and swap it in only when it is valid; otherwise the previous set stays active,
the refusal is logged at ERROR with every problem, and the result says why. Each load also
splits the set per action (:mod:`deputy.policy.slices`): a request is evaluated on only the
policies whose action scope may match its action — the same decision, determining policies
and errors as on the whole set, at a cost that follows the action's policies, not all of them.

Decide: :meth:`PolicyEngine.decide` turns one MCP request (``tools/call`` with the
tool's full arguments, ``resources/read``, ``prompts/get``) into a Cedar request —
principal ``Deputy::User::<user>``, resource ``Deputy::Server::<server>``, the action
for the tool or method, the arguments converted exactly as the schema types them
(:mod:`deputy.policy.arguments`) plus the common context, ``context.user`` included
(:mod:`deputy.policy.user_attributes`: what the caller's token says of its user) — and evaluates it always
*with* the schema. :meth:`PolicyEngine.decide_each` does the same for the items of a
``tools/list``, ``prompts/list``, ``resources/list`` or ``resources/templates/list``
result through the list-time actions; an item stays listed unless its decision is
``deny`` (step-up and approval are enforced when it is called). Annotations and fail-closed rules:
:mod:`deputy.policy.decision`. Nothing here raises on a request: anything unexpected
is a deny that records why.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cedarpy

from deputy import clock
from deputy.act_chain import Actor
from deputy.policy.arguments import ArgumentError, Entities
from deputy.policy.attribute_tests import impossible_input_tests, impossible_user_tests
from deputy.policy.decision import Decision, Outcome, Verdict, arguments_invalid, verdict
from deputy.policy.schema import (
    ACTION_TYPE,
    LIST_ACTIONS,
    SERVER_TYPE,
    TOOLS_CALL,
    USER_TYPE,
    PolicySchema,
    UnknownAction,
)
from deputy.policy.slices import sliced_policy_sets
from deputy.policy.sources import (
    PolicyLoadError,
    PolicyProblem,
    PolicySource,
    parse_policy_files,
    policy_set_version,
    read_policy_files,
    validation_problems,
)
from deputy.policy.user_attributes import NO_USER, UserAttributes, cedar_value

log = logging.getLogger(__name__)


class Caller(Protocol):
    """Who asks: what :class:`deputy.gateway.principal.Principal` carries."""

    @property
    def user(self) -> str: ...
    @property
    def agent(self) -> str: ...
    @property
    def scopes(self) -> AbstractSet[str]: ...
    @property
    def server(self) -> str: ...
    @property
    def actors(self) -> Sequence[Actor]: ...
    @property
    def txn(self) -> str | None: ...
    @property
    def user_attributes(self) -> UserAttributes: ...
    @property
    def issuer(self) -> str: ...


@dataclass(frozen=True, eq=False)
class LoadedPolicies:
    """One validated policy set with the schema it was validated against; swapped as a whole."""

    directory: Path
    version: str
    files: tuple[str, ...]
    sources: Mapping[str, PolicySource]
    policy_set: cedarpy.PolicySet
    schema: PolicySchema
    # The empty entity store, made with the schema: only then does it hold the schema's action entities, whose
    # parents are what ``action in Deputy::Action::"tools/call"`` is decided on. A store made without it left
    # every group scope unmatched on requests without entities (a group forbid not applied: fail open).
    no_entities: cedarpy.Entities
    # Per action, only the policies whose action scope may match it (deputy.policy.slices); an action not here
    # (not in the schema, or its hierarchy uncertain) is decided on the whole set.
    action_sets: Mapping[str, cedarpy.PolicySet] = field(default_factory=dict)

    def policy_set_for(self, action: str) -> cedarpy.PolicySet:
        """The policies Cedar needs for a request of ``action``: the same decision, reasons and errors as all."""
        return self.action_sets.get(action, self.policy_set)


@dataclass(frozen=True, slots=True)
class ReloadResult:
    applied: bool
    version: str
    error: PolicyLoadError | None = None


def load_policies(directory: Path, schema: PolicySchema) -> LoadedPolicies:
    """Read, name, validate (with ``schema``) and parse the policies in ``directory``; raises PolicyLoadError."""
    files = read_policy_files(directory)
    sources = parse_policy_files(files)
    if sources:
        result = cedarpy.validate_policies("\n".join(file.text for file in files), schema.handle)
        if not result.validation_passed:
            raise PolicyLoadError(validation_problems(sources, result.errors))
        impossible = [*impossible_user_tests(sources, schema.user_claims),
                      *impossible_input_tests(sources, schema.json_text)]
        if impossible:
            raise PolicyLoadError(impossible)
    ests = {s.policy_id: s.est for s in sources}
    document = {"staticPolicies": ests, "templates": {}, "templateLinks": []}
    try:
        policy_set = cedarpy.PolicySet.from_json_str(json.dumps(document))
        action_sets = sliced_policy_sets(ests, schema.json_text)
        no_entities = cedarpy.Entities.from_json_str("[]", schema=schema.handle)
    except ValueError as exc:  # not expected after each policy parsed; still a load error, not a crash
        raise PolicyLoadError([PolicyProblem(str(directory), 0, 0, f"Cedar refused the policy set: {exc}")]) from None
    return LoadedPolicies(directory, policy_set_version(files), tuple(f.name for f in files),
                          {s.policy_id: s for s in sources}, policy_set, schema, no_entities, action_sets)


def common_context(caller: Caller, registration: str, now: int, user_claims: Sequence[str] = ()) -> dict[str, Any]:
    actors = caller.actors
    attributes = caller.user_attributes
    if not isinstance(attributes, UserAttributes):  # fail closed: never a caller's stand-in for the record
        attributes = NO_USER
    context: dict[str, Any] = {
        "scopes": list(caller.scopes),
        "agent": {"client_id": caller.agent, "registration": registration},
        "actors": [{"index": i, "sub": a.sub, "client_id": a.client_id or "", "iss": a.iss or ""}
                   for i, a in enumerate(actors)],
        "actor_count": len(actors),
        "actor_client_ids": own_client_ids(actors, caller.issuer),
        "time": now,
        "user": cedar_value(attributes, user_claims),
    }
    if caller.txn is not None:
        context["txn"] = caller.txn
    return context


def own_client_ids(actors: Sequence[Actor], issuer: str) -> list[str]:
    """The ``client_id`` of each hop Deputy vouches for: its ``iss`` is Deputy's (``issuer``), or absent (a hop
    written before every hop carried one; an outside hop never lacks it, :mod:`deputy.act_chain`). A hop of an
    outside issuer names a client of that issuer, which may share a name with one of Deputy's: policies read it
    in ``context.actors``, with its ``iss``."""
    return [a.client_id for a in actors if a.client_id and (not a.iss or a.iss == issuer)]


_Base = tuple[dict[str, str], dict[str, str], dict[str, Any]]


def _base(caller: Caller, registration: str, now: int | None, schema: PolicySchema) -> _Base:
    """What every request of ``caller`` shares: principal, resource, common context."""
    return ({"type": USER_TYPE, "id": caller.user}, {"type": SERVER_TYPE, "id": caller.server},
            common_context(caller, registration, clock.now() if now is None else now, schema.user_claims))


def _request(schema: PolicySchema, base: _Base, method: str, name: str,
             arguments: Any) -> tuple[str, dict[str, Any], Entities]:
    action, context, entities = schema.request(method, name, arguments)
    context.update(base[2])
    request = {"principal": base[0], "action": {"type": ACTION_TYPE, "id": action}, "resource": base[1],
               "context": context}
    return action, request, entities


class PolicyEngine:
    def __init__(self, directory: Path, schema: PolicySchema) -> None:
        self._loaded = load_policies(directory, schema)
        log.info("policies %s: %d policies from %s, version %s", directory, len(self._loaded.sources),
                 ", ".join(self._loaded.files) or "no files", self._loaded.version[:12])

    @property
    def loaded(self) -> LoadedPolicies:
        return self._loaded

    @property
    def version(self) -> str:
        return self._loaded.version

    def reload(self) -> ReloadResult:
        """Re-read the policy directory; keep the active set unless the new one is valid."""
        return self._replace(self._loaded.schema)

    def use_schema(self, schema: PolicySchema) -> ReloadResult:
        """Re-validate the policies against a new schema (the tools changed); keep the old pair on failure."""
        return self._replace(schema)

    def _replace(self, schema: PolicySchema) -> ReloadResult:
        active = self._loaded
        try:
            loaded = load_policies(active.directory, schema)
        except PolicyLoadError as exc:
            log.error("policy reload REFUSED, version %s stays active:\n%s", active.version[:12], exc)
            return ReloadResult(False, active.version, exc)
        self._loaded = loaded
        log.warning("policies reloaded: version %s → %s", active.version[:12], loaded.version[:12])
        return ReloadResult(True, loaded.version)

    def decide(self, caller: Caller, method: str, name: str, arguments: Any = None, *, approved: bool = False,
               registration: str = "unknown", now: int | None = None) -> Decision:
        """Decide one request; see the module docstring. Never raises."""
        loaded = self._loaded
        action = str(name) if method == TOOLS_CALL else method
        try:
            base = _base(caller, registration, now, loaded.schema)
            action, request, entities = _request(loaded.schema, base, method, name, arguments)
            result = cedarpy.is_authorized(request, loaded.policy_set_for(action), entities or loaded.no_entities,
                                           schema=loaded.schema.handle)
            judged = verdict(result, loaded.sources, caller.scopes, approved)
        except ArgumentError as exc:
            judged = arguments_invalid(exc)
        except UnknownAction as exc:
            judged = Verdict(Outcome.DENY, (), (str(exc),))
        except Exception as exc:  # fail closed on anything the caller, cedarpy or the reading of its answer throws
            log.error("policy evaluation failed: %s", type(exc).__name__)  # its message may quote an argument
            judged = Verdict(Outcome.DENY, (), (f"evaluation failed: {type(exc).__name__}: {exc}",))
        return self._decision(loaded, action, caller, judged)

    def decide_each(self, caller: Caller, method: str, names: Sequence[str], *, registration: str = "unknown",
                    now: int | None = None) -> list[Decision]:
        """One list-time decision per item of a list result (``tools/list``, ``prompts/list``, ``resources/list``,
        ``resources/templates/list``): ``names`` are the tools' or prompts' names, the resources' URIs or the
        templates' URI templates; the decisions come in their order.
        """
        loaded = self._loaded
        try:
            if method not in LIST_ACTIONS:
                raise UnknownAction(f"{method!r} is not a list-time action")
            base = _base(caller, registration, now, loaded.schema)
            requests = [_request(loaded.schema, base, method, name, None)[1] for name in names]
            results = cedarpy.is_authorized_batch(requests, loaded.policy_set_for(method), loaded.no_entities,
                                                  schema=loaded.schema.handle) if requests else []
            judged = [verdict(result, loaded.sources, caller.scopes, False) for result in results]
        except (ArgumentError, UnknownAction) as exc:
            judged = [Verdict(Outcome.DENY, (), (str(exc),))] * len(names)
        except Exception as exc:  # fail closed, as in decide
            log.error("policy evaluation failed: %s", type(exc).__name__)  # as in decide
            judged = [Verdict(Outcome.DENY, (), (f"evaluation failed: {type(exc).__name__}: {exc}",))] * len(names)
        return [self._decision(loaded, method, caller, one) for one in judged]

    @staticmethod
    def _decision(loaded: LoadedPolicies, action: str, caller: Caller, judged: Verdict) -> Decision:
        server = caller.server if isinstance(getattr(caller, "server", None), str) else ""
        return Decision(uuid.uuid4().hex, judged.outcome, action, server, judged.determining, judged.errors,
                        loaded.version, loaded.schema.version, judged.required_scopes, judged.approval_required,
                        judged.self_approval, problems=judged.problems, problems_truncated=judged.problems_truncated)
