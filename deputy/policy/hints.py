"""Where in a tool's JSON Schema a generated Cedar type came from, to read the ``format`` of a slot.

The schema generator types ``format: date`` and ``format: date-time`` alike (Cedar ``datetime``),
and ``ipv4`` and ``ipv6`` alike (``ipaddr``), while the upstream reads the two of each pair
differently (:mod:`deputy.policy.formats`). :class:`Hint` walks the tool's ``inputSchema``
alongside the Cedar type — ``properties`` for a record's attributes, ``items`` for a set's
element, ``additionalProperties`` for an entity's tags, the ``anyOf``/``oneOf`` branches (or the
members of a ``type`` list) for a ``typeChoiceN`` union in their order — following local
``$ref`` JSON pointers (RFC 6901; JSON Schema 2020-12 §8.2.3.1). A node it cannot find is
``None``: the slot's format is then unknown, and a ``datetime`` of unknown format is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

NO_DEFAULT: Any = object()  # a member the schema gives no default
MAX_REFERENCES = 32


@dataclass(frozen=True, eq=False)
class Hint:
    """The node of the tool's JSON Schema a Cedar type was generated from: where a slot's ``format`` is read.

    The generator types ``date`` and ``date-time`` alike (``datetime``), ``ipv4`` and ``ipv6`` alike
    (``ipaddr``); the hint, walked alongside the Cedar type, tells them apart.
    """

    node: Mapping[str, Any]
    root: Mapping[str, Any]

    @staticmethod
    def of(schema: Any) -> Hint | None:
        return Hint(schema, schema).resolved() if isinstance(schema, Mapping) else None

    def _at(self, node: Any) -> Hint | None:
        return Hint(node, self.root).resolved() if isinstance(node, Mapping) else None

    def resolved(self) -> Hint | None:
        """This node, or the one its local ``$ref`` (``#/$defs/X``, a JSON pointer) leads to."""
        node: Any = self.node
        for _ in range(MAX_REFERENCES):  # a longer chain of references is a loop
            ref = node.get("$ref")
            if not isinstance(ref, str):
                return Hint(node, self.root)
            if not ref.startswith("#"):
                return None
            node = self.root
            for token in filter(None, ref[1:].split("/")):
                token = token.replace("~1", "/").replace("~0", "~")  # RFC 6901 §4
                node = node.get(token) if isinstance(node, Mapping) else None
            if not isinstance(node, Mapping):
                return None
        return None

    def member(self, name: str) -> Hint | None:
        properties = self.node.get("properties")
        return self._at(properties.get(name)) if isinstance(properties, Mapping) else None

    def member_default(self, name: str) -> Any:
        """The ``default`` the schema gives member ``name`` (beside a ``$ref`` too, as Pydantic writes it), or
        :data:`NO_DEFAULT`."""
        properties = self.node.get("properties")
        node = properties.get(name) if isinstance(properties, Mapping) else None
        return node["default"] if isinstance(node, Mapping) and "default" in node else NO_DEFAULT

    def items(self) -> Hint | None:
        return self._at(self.node.get("items"))

    def extra(self) -> Hint | None:
        return self._at(self.node.get("additionalProperties"))

    def choices(self) -> list[Hint | None]:
        """The branches a ``typeChoiceN`` union was generated from, in order."""
        for keyword in ("anyOf", "oneOf"):
            if isinstance(self.node.get(keyword), list):
                return [self._at(branch) for branch in self.node[keyword]]
        types = self.node.get("type")
        return [self._at({**self.node, "type": ty}) for ty in types] if isinstance(types, list) else []

    def formats(self) -> frozenset[str]:
        found = {self.node.get("format")}
        for branch in self.node.get("allOf") or []:
            hint = self._at(branch)
            found.add(hint.node.get("format") if hint else None)
        return frozenset(f for f in found if isinstance(f, str))
