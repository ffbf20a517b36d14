"""Tool arguments (JSON) → Cedar values, exactly as the schema types them, or an error.

One converter per type is compiled from the Cedar JSON schema when the schema is
built, so a decision only walks the arguments. What each Cedar type accepts:

* ``String`` a JSON string; ``Bool`` ``true``/``false``; ``Long`` a JSON integer in
  the signed 64-bit range — a JSON number with a fraction or exponent (``2.5``, and
  also ``2.0``) is refused, never truncated;
* ``decimal`` (JSON Schema ``number``; the generator runs with ``numbersAsDecimal``)
  any JSON number Cedar's decimal holds *exactly*: at most 4 digits after the point
  and within ±922337203685477.5807 — ``0.1`` is ``decimal("0.1")``, ``0.12345`` is
  refused rather than rounded, since rounding could move it across a policy's bound;
* ``datetime``, ``duration``, ``ipaddr`` a string in the strict form of the JSON Schema
  ``format`` the slot was generated from (:mod:`deputy.policy.formats`: ``date-time``
  RFC 3339 §5.6 with seconds and an offset, ``date`` an RFC 3339 full-date, ``duration``
  fixed-length ISO 8601, ``ipv4`` a dotted-quad without leading zeros, ``ipv6`` RFC 4291
  without zone id or embedded IPv4) — anything two parsers could read differently
  (``"20260601"``) does not fit the tool's schema. The generator types ``date`` and
  ``date-time`` alike, so the format is read from the tool's ``inputSchema``
  (:class:`~deputy.policy.hints.Hint`); a ``datetime`` whose format cannot be found
  there is refused;
* ``Set<T>`` a JSON array (order and duplicates are lost: Cedar sets are sets);
* a record: a JSON object with every required attribute and *no other* member (an
  argument the tool's ``inputSchema`` does not declare cannot be seen by a policy,
  so it is refused); a record whose attributes are all optional ``typeChoiceN`` is
  the generator's encoding of ``anyOf``/a list of types: the first choice that
  accepts the value is used;
* entity types the generator emits: an ``enum`` (one of its strings), an object with
  ``additionalProperties`` (an entity whose tags are the extra members; Deputy adds it
  to the request's entities, named after the argument's path), ``Null`` (JSON
  ``null``), ``Unknown`` (anything; named by the SHA-256 of its RFC 8785 canonical JSON,
  :mod:`deputy.canonical_json`, big integers kept exact by :mod:`deputy.exact_json`, so a
  policy can see that it is there, not what it is).

Anything else raises :class:`~deputy.policy.argument_problems.ArgumentError` naming every
argument that does not fit (up to a bound: objects and arrays are walked to the end, or until
that many are found) and why, never quoting a value
(:mod:`deputy.policy.argument_problems`); the engine turns that into a deny whose reason is
``arguments_invalid``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from deputy.canonical_json import NotCanonicalJson, canonical_json
from deputy.exact_json import big_integers_as_digits
from deputy.policy import formats
from deputy.policy.argument_problems import ArgumentError as ArgumentError  # where it was always imported from
from deputy.policy.argument_problems import Problems, first_problem_only
from deputy.policy.formats import FormatError
from deputy.policy.hints import NO_DEFAULT, Hint

Entities = list[dict[str, Any]]
Converter = Callable[[Any, str, Entities], Any]

LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1
DECIMAL_LIMIT = Decimal("922337203685477.5807")
FOUR_PLACES = Decimal("0.0001")
_UNION_MEMBER = re.compile(r"typeChoice(\d+)\Z")


# No message below quotes the value: it may be a secret, and the answer and the audit record keep it.
def _string(value: Any, path: str, entities: Entities) -> Any:
    if type(value) is str:
        return value
    raise ArgumentError(path, f"expected a string, got {_kind(value)}")


def _bool(value: Any, path: str, entities: Entities) -> Any:
    if type(value) is bool:
        return value
    raise ArgumentError(path, f"expected true or false, got {_kind(value)}")


def _long(value: Any, path: str, entities: Entities) -> Any:
    if type(value) is int:
        if LONG_MIN <= value <= LONG_MAX:
            return value
        raise ArgumentError(path, "integer outside the 64-bit range of Cedar's Long")
    if type(value) is float:
        raise ArgumentError(path, "expected an integer, got a number with a fraction or an exponent; not truncated")
    raise ArgumentError(path, f"expected an integer, got {_kind(value)}")


def _decimal(value: Any, path: str, entities: Entities) -> Any:
    if type(value) not in (int, float):
        raise ArgumentError(path, f"expected a number, got {_kind(value)}")
    try:
        number = Decimal(repr(value)) if type(value) is float else Decimal(value)
        exact = number.quantize(FOUR_PLACES) == number and abs(number) <= DECIMAL_LIMIT
    except InvalidOperation:
        exact = False
    if not exact:
        raise ArgumentError(path, "not exactly a Cedar decimal (at most 4 places, within ±9.2e14); not rounded")
    text = format(number, "f")
    return {"__extn": {"fn": "decimal", "arg": text if "." in text else text + ".0"}}


def _formatted(fn: str, accepted: Mapping[str, Callable[[str], str]]) -> Converter:
    """A Cedar extension value read from a string in one of the ``accepted`` JSON Schema formats (strictly)."""
    names = " or ".join(accepted)

    def convert(value: Any, path: str, entities: Entities) -> Any:
        if type(value) is not str:
            raise ArgumentError(path, f"expected a {names} string, got {_kind(value)}")
        reasons = []
        for read in accepted.values():
            try:
                return {"__extn": {"fn": fn, "arg": read(value)}}
            except FormatError as exc:
                reasons.append(str(exc))
        raise ArgumentError(path, f"format {names}: {'; '.join(reasons)}")
    return convert


# The Cedar extension types the generator emits, by the JSON Schema formats they come from.
FORMATS: dict[str, tuple[str, dict[str, Callable[[str], str]]]] = {
    "datetime": ("datetime", {"date-time": formats.date_time, "date": formats.full_date}),
    "duration": ("duration", {"duration": formats.duration}),
    "ipaddr": ("ip", {"ipv4": formats.ipv4, "ipv6": formats.ipv6}),
}


def _unknown_datetime(value: Any, path: str, entities: Entities) -> Any:
    raise ArgumentError(path, "the schema does not say whether this is a date or a date-time")


def _extension(name: str, found: frozenset[str]) -> Converter:
    """The converter of one slot, reading only the formats its JSON Schema names."""
    fn, known = FORMATS[name]
    if found & known.keys():
        return _formatted(fn, {f: read for f, read in known.items() if f in found})
    if name == "datetime":  # a date and a date-time are read differently upstream: never guess (formats.py)
        return _unknown_datetime
    return _formatted(fn, known)  # one reading each: an ipv4 and an ipv6 text never look alike


BUILTINS: dict[str, Converter] = {
    "String": _string, "Long": _long, "Bool": _bool, "Boolean": _bool,
    "decimal": _decimal,
}


def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
            dict: "an object", type(None): "null"}.get(type(value), type(value).__name__)


def _set(element: Converter) -> Converter:
    def convert(value: Any, path: str, entities: Entities) -> Any:
        if type(value) is not list:
            raise ArgumentError(path, f"expected an array, got {_kind(value)}")
        out = []
        problems = Problems()
        for i, item in enumerate(value):
            try:
                out.append(element(item, f"{path}[{i}]", entities))
            except ArgumentError as exc:
                problems.add(i, exc)
                if problems.full:
                    break
        problems.check()
        return out
    return convert


Slot = tuple[Converter, bool, Any]  # a member's converter, whether it is required, its default (or NO_DEFAULT)


def _record(attributes: Mapping[str, Slot]) -> Converter:
    required = frozenset(name for name, (_, needed, _) in attributes.items() if needed)

    def convert(value: Any, path: str, entities: Entities) -> Any:
        if type(value) is not dict:
            raise ArgumentError(path, f"expected an object, got {_kind(value)}")
        out: dict[str, Any] = {}
        problems = Problems()
        for name, item in value.items():
            slot = attributes.get(name)
            if slot is None:
                problems.here(name, f"{path}.{name}", UNDECLARED)
            else:
                try:
                    out[name] = slot[0](item, f"{path}.{name}", entities)
                except ArgumentError as exc:
                    problems.add(name, exc)
            if problems.full:
                break
        _missing(problems, path, required, value)
        problems.check()
        _defaults(attributes, value, path, entities, out)
        return out
    return convert


UNDECLARED = "not in the tool's input schema, so no policy could see it"


def _defaults(slots: Mapping[str, Slot], value: dict[str, Any], path: str, entities: Entities,
              out: dict[str, Any]) -> None:
    """Each optional member absent from ``value`` that the schema gives a ``default``, as that default: what the
    upstream runs (an SDK server fills it in from the tool's signature), so what is decided is what is run — a
    ``forbid`` on ``context.input.recursive`` sees the ``true`` an omitted argument becomes. A default its own type
    refuses leaves the member absent."""
    for name, (convert, needed, default) in slots.items():
        if not needed and default is not NO_DEFAULT and name not in value:
            found: Entities = []
            try:
                out[name] = convert(default, f"{path}.{name}", found)
            except ArgumentError:
                continue
            entities.extend(found)


def _missing(problems: Problems, path: str, required: frozenset[str], value: dict[str, Any]) -> None:
    """One problem per required member absent from ``value`` (in name order), while there is room."""
    for name in sorted(required - value.keys()):
        if problems.full:
            return
        problems.here(name, f"{path}.{name}", "required argument is missing")


def _union(choices: list[tuple[str, Converter]]) -> Converter:
    def convert(value: Any, path: str, entities: Entities) -> Any:
        for name, choice in choices:
            found: Entities = []
            try:
                with first_problem_only():
                    converted = choice(value, path, found)
            except ArgumentError:
                continue
            entities.extend(found)
            return {name: converted}
        raise ArgumentError(path, f"{_kind(value)} matches none of the types the schema allows here")
    return convert


def _enum(entity_type: str, choices: frozenset[str]) -> Converter:
    def convert(value: Any, path: str, entities: Entities) -> Any:
        if type(value) is str and value in choices:
            return {"__entity": {"type": entity_type, "id": value}}
        raise ArgumentError(path, f"expected one of {sorted(choices)}")
    return convert


def _tagged(entity_type: str, shape: Mapping[str, Slot], tags: Converter | None) -> Converter:
    required = frozenset(name for name, (_, needed, _) in shape.items() if needed)

    def convert(value: Any, path: str, entities: Entities) -> Any:
        if type(value) is not dict:
            raise ArgumentError(path, f"expected an object, got {_kind(value)}")
        attrs: dict[str, Any] = {}
        tag_values: dict[str, Any] = {}
        problems = Problems()
        for name, item in value.items():
            try:
                if name in shape:
                    attrs[name] = shape[name][0](item, f"{path}.{name}", entities)
                elif tags is not None:
                    tag_values[name] = tags(item, f"{path}.{name}", entities)
                else:
                    problems.here(name, f"{path}.{name}", UNDECLARED)
            except ArgumentError as exc:
                problems.add(name, exc)
            if problems.full:
                break
        _missing(problems, path, required, value)
        problems.check()
        _defaults(shape, value, path, entities, attrs)
        uid = {"type": entity_type, "id": path}
        entities.append({"uid": uid, "attrs": attrs, "parents": [], "tags": tag_values})
        return {"__entity": uid}
    return convert


def _null(entity_type: str) -> Converter:
    def convert(value: Any, path: str, entities: Entities) -> Any:
        if value is None:
            return {"__entity": {"type": entity_type, "id": "null"}}
        raise ArgumentError(path, f"expected null, got {_kind(value)}")
    return convert


def _opaque(entity_type: str) -> Converter:
    def convert(value: Any, path: str, entities: Entities) -> Any:
        try:
            # Integers beyond ±(2^53 - 1) as digits, with the pointers to them, so 2**60 and "1152921504606846976"
            # are named apart; RFC 8785, the one canonical form, so 1 and 1.0 (one JSON number) get one name.
            representable, big_integers = big_integers_as_digits(value)
            canonical = canonical_json([representable, big_integers])
        except (RecursionError, NotCanonicalJson):
            raise ArgumentError(path, "not a JSON value") from None
        return {"__entity": {"type": entity_type, "id": hashlib.sha256(canonical).hexdigest()}}
    return convert


class SchemaTypeError(ValueError):
    """The Cedar schema uses a type Deputy cannot convert arguments to."""


def _nth(branches: list[Hint | None], member: str) -> Hint | None:
    index = int(member[len("typeChoice"):])
    return branches[index] if index < len(branches) else None


class TypeCompiler:
    """Compiles converters for the types of one Cedar JSON schema (all namespaces), caching named types.

    Each type is compiled with the :class:`Hint` of the JSON Schema node it came from, when known.
    """

    def __init__(self, schema: Mapping[str, Any], root: str) -> None:
        self.schema = schema
        self.root = root
        self.named: dict[tuple[str, int], Converter] = {}
        self._hints: list[Hint] = []  # keeps the nodes whose ids key self.named alive

    def compile(self, ty: Mapping[str, Any], namespace: str, hint: Hint | None = None) -> Converter:
        kind = ty.get("type")
        if kind == "Set":
            return _set(self.compile(ty["element"], namespace, hint.items() if hint else None))
        if kind == "Record":
            declared: Mapping[str, Any] = ty.get("attributes", {})
            if declared and all(_UNION_MEMBER.match(name) and not sub.get("required", True)
                                for name, sub in declared.items()):
                branches = hint.choices() if hint else []
                order = sorted(declared, key=lambda name: int(name[len("typeChoice"):]))
                return _union([(name, self.compile(declared[name], namespace, _nth(branches, name)))
                               for name in order])
            return _record({name: self.slot(name, sub, namespace, hint) for name, sub in declared.items()})
        if kind in ("Entity", "EntityOrCommon", "Extension"):
            return self.named_type(str(ty["name"]), namespace, hint)
        if isinstance(kind, str):  # a common type referenced by its name alone
            return self.named_type(kind, namespace, hint)
        raise SchemaTypeError(f"unsupported schema type {ty!r}")

    def slot(self, name: str, ty: Mapping[str, Any], namespace: str, hint: Hint | None) -> Slot:
        """Member ``name`` of a record or entity: its converter, whether it is required, and its default."""
        return (self.compile(ty, namespace, hint.member(name) if hint else None), ty.get("required", True),
                hint.member_default(name) if hint else NO_DEFAULT)

    def named_type(self, name: str, namespace: str, hint: Hint | None = None) -> Converter:
        space, _, base = name.rpartition("::")
        space = space or namespace
        full = f"{space}::{base}"
        key = (full, id(hint.node) if hint else 0)
        if key in self.named:
            return self.named[key]
        if hint is not None:
            self._hints.append(hint)
        definitions = self.schema.get(space, {})
        if base in definitions.get("commonTypes", {}):
            def deferred(value: Any, path: str, entities: Entities) -> Any:  # allows self-reference
                return self.named[key](value, path, entities)
            self.named[key] = deferred
            self.named[key] = self.compile(definitions["commonTypes"][base], space, hint)
        elif base in definitions.get("entityTypes", {}):
            self.named[key] = self.entity(full, definitions["entityTypes"][base], space, hint)
        elif "::" not in name and name in FORMATS:
            return _extension(name, hint.formats() if hint else frozenset())
        elif "::" not in name and name in BUILTINS:
            return BUILTINS[name]
        else:
            raise SchemaTypeError(f"unknown type {name} in {namespace}")
        return self.named[key]

    def entity(self, full: str, definition: Mapping[str, Any], namespace: str, hint: Hint | None = None
               ) -> Converter:
        if "enum" in definition:
            return _enum(full, frozenset(definition["enum"]))
        if full == f"{self.root}::Null":
            return _null(full)
        if full == f"{self.root}::Unknown":
            return _opaque(full)
        shape = definition.get("shape", {"type": "Record", "attributes": {}})
        attributes = {name: self.slot(name, sub, namespace, hint) for name, sub in shape.get("attributes", {}).items()}
        tags = None if "tags" not in definition else self.compile(definition["tags"], namespace,
                                                                  hint.extra() if hint else None)
        return _tagged(full, attributes, tags)
