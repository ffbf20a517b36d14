"""What an attribute path under ``context`` is in the requests of one action, read from the schema's JSON form.

:mod:`deputy.policy.attribute_tests` asks, for ``context.input.opts has force`` and each action a policy may
apply to, what ``context.input.opts`` is there: a record or an entity (a :class:`Shape`: the attributes it
declares, and whether it has tags — what an object with ``additionalProperties`` becomes,
:mod:`deputy.policy.arguments`), :attr:`Unresolved.ABSENT` when no request of that action can hold the path, or
:attr:`Unresolved.UNKNOWN` when this module cannot tell.

Types are read as the Cedar JSON schema format writes them (https://docs.cedarpolicy.com/schema/json-schema.html):
``{"type": "Record", "attributes": …}``; ``{"type": "Entity", "name": N}``; ``{"type": "EntityOrCommon",
"name": N}`` — a common type of that name, else an entity type; ``{"type": N}`` with any ``N`` that is not one of
the format's own words — a common type. A qualified name (``Deputy::run::Input::env``) is looked up in its
namespace; an unqualified one in the namespace it is written in, then in the empty namespace. An entity type's
attributes are its ``shape``; ``tags`` gives it tags; an ``enum`` entity type has no attributes.

The path is ABSENT for an action when the action applies to no request (its ``appliesTo`` is missing, or names no
principal or no resource type: the group ``Deputy::Action::"tools/call"``), or when a record or entity on the way
does not declare the next attribute: Cedar's validator then accepts the path only where a ``has`` guards it, in a
branch no request of that action reaches. Anything else not named above — a set or a primitive on the way, a name
that cannot be found, a malformed or too deeply nested type — is UNKNOWN, so a caller that refuses policies on
what it learns here refuses none on a guess.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from deputy.policy.schema import NAMESPACE

# The words of the JSON schema format's "type" field that are not common type names.
_OWN_WORDS: Final = frozenset({"String", "Long", "Boolean", "Set", "Record", "Entity", "EntityOrCommon",
                               "Extension"})
_MAX_DEPTH: Final = 64  # common types naming common types; Cedar refuses cycles, this bounds a malformed schema


class Unresolved(enum.Enum):
    ABSENT = "absent"  # no request of the action can hold the path
    UNKNOWN = "unknown"  # this module cannot tell what it is


@dataclass(frozen=True, slots=True)
class Shape:
    """A record or entity type: its attributes (name → JSON type, written in ``namespace``) and, for an entity,
    whether it has tags."""

    attributes: Mapping[str, Any]
    namespace: str
    tags: bool = False


Resolved = Shape | Unresolved


class ContextTypes:
    """Resolves ``context`` paths against one schema (its parsed JSON form), action by action."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self._document = document
        self._seen: dict[tuple[str, tuple[str, ...]], Resolved] = {}

    def resolve(self, action: str, path: Sequence[str]) -> Resolved:
        """What ``context.<path>`` is in the requests of ``action`` (of the namespace ``Deputy``)."""
        key = (action, tuple(path))
        if key not in self._seen:
            self._seen[key] = self._resolve(action, key[1])
        return self._seen[key]

    def _resolve(self, action: str, path: tuple[str, ...]) -> Resolved:
        definition = self._section(NAMESPACE, "actions").get(action)
        if type(definition) is not dict:
            return Unresolved.UNKNOWN
        applies = definition.get("appliesTo")
        if applies is None:
            return Unresolved.ABSENT  # an action without appliesTo applies to no request (a group)
        if type(applies) is not dict:
            return Unresolved.UNKNOWN
        if any(applies.get(side) == [] for side in ("principalTypes", "resourceTypes")):
            return Unresolved.ABSENT
        current = self._type(applies.get("context", {"type": "Record", "attributes": {}}), NAMESPACE, 0)
        for attribute in path:
            if not isinstance(current, Shape):
                return Unresolved.UNKNOWN  # an attribute of a set, a primitive, or of what cannot be read
            if attribute not in current.attributes:
                return Unresolved.ABSENT
            current = self._type(current.attributes[attribute], current.namespace, 0)
        return current

    def _type(self, ty: Any, namespace: str, depth: int) -> Resolved:
        if type(ty) is not dict or depth > _MAX_DEPTH:
            return Unresolved.UNKNOWN
        kind = ty.get("type")
        if kind == "Record":
            attributes = ty.get("attributes", {})
            return Shape(attributes, namespace) if type(attributes) is dict else Unresolved.UNKNOWN
        if kind in ("Entity", "EntityOrCommon") and type(ty.get("name")) is str:
            return self._named(ty["name"], namespace, depth, common=kind == "EntityOrCommon")
        if type(kind) is str and kind not in _OWN_WORDS:
            return self._named(kind, namespace, depth, common=True, entity=False)
        return Unresolved.UNKNOWN  # a set, a primitive, an extension type, or not a type

    def _named(self, name: str, namespace: str, depth: int, *, common: bool, entity: bool = True) -> Resolved:
        space, _, base = name.rpartition("::")
        for where in [space] if space else [namespace, ""]:
            if common and base in self._section(where, "commonTypes"):
                return self._type(self._section(where, "commonTypes")[base], where, depth + 1)
            if entity and base in self._section(where, "entityTypes"):
                return self._entity(self._section(where, "entityTypes")[base], where, depth)
        return Unresolved.UNKNOWN  # a primitive or extension type by name, or a name not found

    def _entity(self, definition: Any, namespace: str, depth: int) -> Resolved:
        if type(definition) is not dict:
            return Unresolved.UNKNOWN
        if "enum" in definition:
            return Shape({}, namespace)
        shape = self._type(definition.get("shape", {"type": "Record", "attributes": {}}), namespace, depth + 1)
        if not isinstance(shape, Shape):
            return Unresolved.UNKNOWN
        return Shape(shape.attributes, shape.namespace, tags="tags" in definition)

    def _section(self, namespace: str, section: str) -> Mapping[str, Any]:
        space = self._document.get(namespace)
        found = space.get(section) if type(space) is dict else None
        return found if type(found) is dict else {}
