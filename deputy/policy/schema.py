"""The Cedar schema of one upstream server: Deputy's stub plus one typed action per tool.

Built with the official ``cedar-policy-mcp-schema-generator`` from :data:`STUB` and the
server's ``tools/list`` (config :data:`GENERATOR_CONFIG`), then post-processed on its
JSON form. Everything lives in the namespace ``Deputy``:

* ``Deputy::User`` — the principal: the token's subject (a person, or the agent itself
  when no person is involved), id = ``sub``.
* ``Deputy::Server`` — the resource: the upstream, id = its configured name.
* ``Deputy::Action::"<tool>"`` — one per tool, named exactly as the tool (after
  :mod:`deputy.policy.names` undoes any stand-in), all members of the group
  ``Deputy::Action::"tools/call"``; ``context.input`` is typed from the tool's
  ``inputSchema`` (nested objects are records, arrays sets, ``number`` decimal,
  ``enum`` an enumerated entity type ``Deputy::<tool>::Input::<property>``).
* Deputy's own actions, named after the MCP method they decide — ``"resources/read"``
  (``context.uri``), ``"prompts/get"`` (``context.name``, ``context.arguments``: an
  entity whose tags are the prompt's arguments) — and the list-time actions
  ``"tools/list"`` / ``"prompts/list"`` (``context.name``), ``"resources/list"``
  (``context.uri``) and ``"resources/templates/list"`` (``context.uri_template``),
  asked once per listed item with no arguments, so a rule on a
  tool's arguments never hides the tool. MCP tool names may contain only letters,
  digits, ``_``, ``-`` and ``.``, so a conforming tool can never be called
  ``"tools/call"`` or ``"resources/read"``; a tool that is named so anyway is left out
  (:attr:`PolicySchema.skipped`) and calls to it are denied.
* Common context, on every action: ``scopes: Set<String>``, ``agent: {client_id,
  registration}`` (the client that presented the token and how it was registered:
  ``config``, ``cli``, ``document``, ``dynamic``, ``none`` — no registration, a workload
  identity — or ``unknown``), ``actors:
  Set<{index, sub, client_id, iss}>`` — the RFC 8693 ``act`` chain; Cedar has no
  ordered list, so each hop carries its position (0 = current actor) and an absent
  ``client_id``/``iss`` is ``""`` —, ``actor_count: Long``, ``actor_client_ids:
  Set<String>`` (for "was Deputy's client X anywhere in the chain": only hops Deputy vouches for, an outside
  issuer's client of the same name is in ``actors`` with its ``iss``), ``txn?: String``,
  ``time: Long`` (Unix seconds) and ``user`` — the token's user: name, e-mail, groups,
  identity provider and the configured extra claims (:mod:`deputy.policy.user_attributes`).

A tool the generator cannot type is left out and named in :attr:`PolicySchema.skipped`
(fail closed: no action, no permit). The output is deterministic (sorted canonical
JSON, RFC 8785); :attr:`PolicySchema.version` is its SHA-256.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import cedarpy
from cedar_mcp_schema_generator import generate_schema

from deputy.canonical_json import canonical_json
from deputy.policy.arguments import ArgumentError, Converter, Entities, SchemaTypeError, TypeCompiler
from deputy.policy.hints import Hint
from deputy.policy.names import NameClash, Renamer
from deputy.policy.user_attributes import schema_type

NAMESPACE: Final = "Deputy"
USER_TYPE: Final = f"{NAMESPACE}::User"
SERVER_TYPE: Final = f"{NAMESPACE}::Server"
ACTION_TYPE: Final = f"{NAMESPACE}::Action"
PROMPT_ARGUMENTS_TYPE: Final = f"{NAMESPACE}::PromptArguments"

TOOLS_CALL: Final = "tools/call"
RESOURCES_READ: Final = "resources/read"
PROMPTS_GET: Final = "prompts/get"
TOOLS_LIST: Final = "tools/list"
RESOURCES_LIST: Final = "resources/list"
RESOURCE_TEMPLATES_LIST: Final = "resources/templates/list"
PROMPTS_LIST: Final = "prompts/list"
LIST_ACTIONS: Final = frozenset({TOOLS_LIST, RESOURCES_LIST, RESOURCE_TEMPLATES_LIST, PROMPTS_LIST})
DEPUTY_ACTIONS: Final = frozenset({TOOLS_CALL, RESOURCES_READ, PROMPTS_GET}) | LIST_ACTIONS

GENERATOR_CONFIG: Final = {"objectsAsRecords": True, "numbersAsDecimal": True, "eraseAnnotations": True}

_CONTEXT_BY_TARGET = "principal: [User], resource: [Server], context: "
STUB: Final = f"""namespace {NAMESPACE} {{
  @mcp_principal("User")
  entity User;
  @mcp_resource("Server")
  entity Server;
  entity PromptArguments tags String;
  type Agent = {{ client_id: String, registration: String }};
  type Actor = {{ index: Long, sub: String, client_id: String, iss: String }};

  @mcp_action("{TOOLS_CALL}")
  action "{TOOLS_CALL}";
  action "{RESOURCES_READ}" appliesTo {{ {_CONTEXT_BY_TARGET}{{ uri: String }} }};
  action "{PROMPTS_GET}" appliesTo {{ {_CONTEXT_BY_TARGET}{{ name: String, arguments: PromptArguments }} }};
  action "{TOOLS_LIST}" appliesTo {{ {_CONTEXT_BY_TARGET}{{ name: String }} }};
  action "{RESOURCES_LIST}" appliesTo {{ {_CONTEXT_BY_TARGET}{{ uri: String }} }};
  action "{RESOURCE_TEMPLATES_LIST}" appliesTo {{ {_CONTEXT_BY_TARGET}{{ uri_template: String }} }};
  action "{PROMPTS_LIST}" appliesTo {{ {_CONTEXT_BY_TARGET}{{ name: String }} }};
}}
"""


def _type(name: str, required: bool = True) -> dict[str, Any]:
    ty: dict[str, Any] = {"type": "EntityOrCommon", "name": name}
    return ty if required else {**ty, "required": False}


def _set_of(name: str) -> dict[str, Any]:
    return {"type": "Set", "element": _type(name)}


COMMON_CONTEXT: Final[Mapping[str, dict[str, Any]]] = {
    "scopes": _set_of("String"),
    "agent": _type("Agent"),
    "actors": _set_of("Actor"),
    "actor_count": _type("Long"),
    "actor_client_ids": _set_of("String"),
    "txn": _type("String", required=False),
    "time": _type("Long"),
}


class SchemaError(ValueError):
    """The schema could not be built (the generator or Cedar refused it)."""


class UnknownAction(LookupError):
    """A request for a tool or method the schema has no action for."""


@dataclass(frozen=True, eq=False)
class PolicySchema:
    """A built schema: canonical JSON, Cedar text, content hash, parsed handle, argument converters."""

    json_text: str
    cedar_text: str
    version: str
    handle: cedarpy.Schema
    inputs: Mapping[str, Converter]
    skipped: Mapping[str, str] = field(default_factory=dict)
    user_claims: tuple[str, ...] = ()  # the extra claims ``context.user.claims`` types

    @property
    def tools(self) -> frozenset[str]:
        return frozenset(self.inputs)

    def request(self, method: str, name: str, arguments: Any) -> tuple[str, dict[str, Any], Entities]:
        """The Cedar action id, the method-specific context and the entities for one MCP request.

        Raises :class:`UnknownAction` or :class:`ArgumentError`; the common context is the engine's.
        """
        if type(name) is not str:
            raise ArgumentError("name", "expected a string")
        entities: Entities = []
        if method == TOOLS_CALL:
            convert = self.inputs.get(name)
            if convert is None:
                why = self.skipped.get(name)
                raise UnknownAction(f"no action for tool {name!r}" + (f" ({why})" if why else " (not in tools/list)"))
            return name, {"input": convert({} if arguments is None else arguments, "input", entities)}, entities
        if method in (RESOURCES_READ, RESOURCES_LIST):
            return method, {"uri": name}, entities
        if method == PROMPTS_GET:
            return method, {"name": name, "arguments": _prompt_arguments(arguments, entities)}, entities
        if method in (TOOLS_LIST, PROMPTS_LIST):
            return method, {"name": name}, entities
        if method == RESOURCE_TEMPLATES_LIST:
            return method, {"uri_template": name}, entities
        raise UnknownAction(f"method {method!r} is not decided by policy")


def _prompt_arguments(arguments: Any, entities: Entities) -> dict[str, Any]:
    arguments = {} if arguments is None else arguments
    if type(arguments) is not dict or not all(type(v) is str for v in arguments.values()):
        raise ArgumentError("arguments", "prompt arguments are an object of strings")
    uid = {"type": PROMPT_ARGUMENTS_TYPE, "id": "arguments"}
    entities.append({"uid": uid, "attrs": {}, "parents": [], "tags": dict(arguments)})
    return {"__entity": uid}


def load_tools(document: Any) -> list[dict[str, Any]]:
    """The tools of a ``tools/list`` answer given as a list, ``{"tools": [...]}`` or a JSON-RPC response."""
    if isinstance(document, dict) and isinstance(document.get("result"), dict):
        document = document["result"]
    if isinstance(document, dict):
        document = document.get("tools")
    if not isinstance(document, list) or not all(isinstance(tool, dict) for tool in document):
        raise SchemaError("expected a tools/list result: a list of tools, {\"tools\": [...]} or a JSON-RPC response")
    return document


def build_schema(tools: Sequence[Mapping[str, Any]], user_claims: Iterable[str] = ()) -> PolicySchema:
    """Generate, post-process and parse the schema for a server offering ``tools``; ``user_claims`` are the extra
    claim names ``context.user.claims`` types (every identity provider's ``extra_claims``)."""
    claim_names = tuple(sorted(set(user_claims)))
    common = {**COMMON_CONTEXT, "user": schema_type(claim_names)}
    renamer = Renamer()
    prepared: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    names = [tool.get("name") for tool in tools]
    for tool, name in zip(tools, names, strict=True):
        if not isinstance(name, str) or not name:
            skipped[repr(name)] = "a tool without a name"
        elif names.count(name) > 1:
            skipped[name] = "more than one tool has this name"
        elif name in DEPUTY_ACTIONS:
            skipped[name] = "the name of one of Deputy's own actions"
        else:
            # Only what the schema is made of: outputs, annotations, icons, _meta cannot break generation.
            prepared.append({"name": renamer(name), "inputSchema": renamer.json_schema(tool.get("inputSchema"))})
    try:
        renamer.check()
    except NameClash as exc:
        raise SchemaError(str(exc)) from None
    document = _generate(prepared, renamer, skipped)
    namespace = document[NAMESPACE]
    actions = namespace["actions"]
    for alias in [a for a in actions if a in renamer.real]:
        actions[renamer.real[alias]] = actions.pop(alias)
    for name, action in actions.items():
        context = action.get("appliesTo", {}).get("context")
        if context is not None:
            clash = common.keys() & context["attributes"].keys()
            if clash:
                raise SchemaError(f"action {name!r} already has context attribute {sorted(clash)[0]!r}")
            context["attributes"].update(common)
    renamer.restore_attributes(document)
    try:
        json_text = canonical_json(document).decode()  # RFC 8785: its SHA-256 is the schema's version
        handle = cedarpy.Schema.from_json_str(json_text)
    except ValueError as exc:
        raise SchemaError(f"Cedar refused the generated schema: {exc}") from None
    compiler = TypeCompiler(document, NAMESPACE)
    hints = {tool["name"]: tool.get("inputSchema") for tool in tools if isinstance(tool.get("name"), str)}
    inputs: dict[str, Converter] = {}
    for name, action in sorted(actions.items()):
        if name in DEPUTY_ACTIONS:
            continue
        try:
            inputs[name] = compiler.compile(action["appliesTo"]["context"]["attributes"]["input"], NAMESPACE,
                                            Hint.of(hints.get(name)))  # date vs date-time, ipv4 vs ipv6
        except (SchemaTypeError, KeyError) as exc:  # fail closed: no converter, no action
            skipped[name] = f"arguments cannot be converted for Cedar: {exc}"
    return PolicySchema(json_text, str(handle), hashlib.sha256(json_text.encode()).hexdigest(), handle, inputs,
                        dict(sorted(skipped.items())), claim_names)


def _generate(prepared: list[dict[str, Any]], renamer: Renamer, skipped: dict[str, str]) -> dict[str, Any]:
    result = generate_schema(STUB, prepared, config=dict(GENERATOR_CONFIG))
    if not result["isOk"]:
        # Find the tools the generator refuses, one by one, and leave them out.
        kept = []
        for tool in prepared:
            alone = generate_schema(STUB, [tool], config=dict(GENERATOR_CONFIG))
            if alone["isOk"]:
                kept.append(tool)
            else:
                name = renamer.real.get(tool["name"], tool["name"])
                skipped[name] = f"the schema generator refused it: {alone['error']}"
        result = generate_schema(STUB, kept, config=dict(GENERATOR_CONFIG))
        if not result["isOk"]:
            raise SchemaError(f"the schema generator failed: {result['error']}")
    document: dict[str, Any] = json.loads(result["schemaJson"])
    return document
