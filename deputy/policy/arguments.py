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
* ``datetime`` (``format: date``/``date-time``) an RFC 3339 date or date-time (no
  offset means UTC; sub-millisecond digits are cut, as the generator does);
  ``duration`` (``format: duration``) ISO 8601 days, hours, minutes, seconds (years
  and months have no fixed length and are refused); ``ipaddr`` an IPv4/IPv6 address
  or network;
* ``Set<T>`` a JSON array (order and duplicates are lost: Cedar sets are sets);
* a record: a JSON object with every required attribute and *no other* member (an
  argument the tool's ``inputSchema`` does not declare cannot be seen by a policy,
  so it is refused); a record whose attributes are all optional ``typeChoiceN`` is
  the generator's encoding of ``anyOf``/a list of types: the first choice that
  accepts the value is used;
* entity types the generator emits: an ``enum`` (one of its strings), an object with
  ``additionalProperties`` (an entity whose tags are the extra members; Deputy adds it
  to the request's entities, named after the argument's path), ``Null`` (JSON
  ``null``), ``Unknown`` (anything; named by the SHA-256 of its canonical JSON, so a
  policy can see that it is there, not what it is).

Anything else raises :class:`ArgumentError` naming the argument's path; the engine
turns that into a deny.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import json
import re
from collections.abc import Callable, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

Entities = list[dict[str, Any]]
Converter = Callable[[Any, str, Entities], Any]

LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1
DECIMAL_LIMIT = Decimal("922337203685477.5807")
FOUR_PLACES = Decimal("0.0001")
_UNION_MEMBER = re.compile(r"typeChoice(\d+)\Z")
_DURATION = re.compile(r"P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)(?:\.(\d{1,3}))?S)?)?\Z")


class ArgumentError(ValueError):
    """A value that does not fit its Cedar type; ``path`` names it (``input.opts.depth``)."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


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
        raise ArgumentError(path, f"the schema says integer (Long), got the JSON number {value!r}; not truncated")
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
        raise ArgumentError(path, f"{value!r} is not exactly a Cedar decimal (4 places, ±9.2e14); not rounded")
    text = format(number, "f")
    return {"__extn": {"fn": "decimal", "arg": text if "." in text else text + ".0"}}


def _datetime(value: Any, path: str, entities: Entities) -> Any:
    if type(value) is not str:
        raise ArgumentError(path, f"expected a date or date-time string, got {_kind(value)}")
    try:
        if len(value) == 10:
            return {"__extn": {"fn": "datetime", "arg": dt.date.fromisoformat(value).isoformat()}}
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ArgumentError(path, "not an RFC 3339 date or date-time") from None
    offset = moment.utcoffset()
    stamp = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if moment.microsecond:
        stamp += f".{moment.microsecond // 1000:03d}"
    if offset is None or not offset:
        stamp += "Z"
    else:
        minutes = int(offset.total_seconds()) // 60
        stamp += f"{'+' if minutes >= 0 else '-'}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"
    return {"__extn": {"fn": "datetime", "arg": stamp}}


def _duration(value: Any, path: str, entities: Entities) -> Any:
    match = _DURATION.match(value) if type(value) is str else None
    if match is None or value in ("P", "PT") or value.endswith("T"):
        raise ArgumentError(path, "not an ISO 8601 duration in weeks, days, hours, minutes and seconds")
    weeks, days, hours, minutes, seconds, fraction = match.groups()
    parts = [(int(weeks or 0) * 7 + int(days or 0), "d"), (int(hours or 0), "h"), (int(minutes or 0), "m"),
             (int(seconds or 0), "s"), (int((fraction or "0").ljust(3, "0")), "ms")]
    text = "".join(f"{amount}{unit}" for amount, unit in parts if amount)
    return {"__extn": {"fn": "duration", "arg": text or "0ms"}}


def _ipaddr(value: Any, path: str, entities: Entities) -> Any:
    if type(value) is not str:
        raise ArgumentError(path, f"expected an IP address, got {_kind(value)}")
    try:
        text = str(ipaddress.ip_interface(value) if "/" in value else ipaddress.ip_address(value))
    except ValueError:
        raise ArgumentError(path, "not an IP address or network") from None
    return {"__extn": {"fn": "ip", "arg": text}}


BUILTINS: dict[str, Converter] = {
    "String": _string, "Long": _long, "Bool": _bool, "Boolean": _bool,
    "decimal": _decimal, "datetime": _datetime, "duration": _duration, "ipaddr": _ipaddr,
}


def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
            dict: "an object", type(None): "null"}.get(type(value), type(value).__name__)


def _set(element: Converter) -> Converter:
    def convert(value: Any, path: str, entities: Entities) -> Any:
        if type(value) is not list:
            raise ArgumentError(path, f"expected an array, got {_kind(value)}")
        return [element(item, f"{path}[{i}]", entities) for i, item in enumerate(value)]
    return convert


def _record(attributes: Mapping[str, tuple[Converter, bool]]) -> Converter:
    required = frozenset(name for name, (_, needed) in attributes.items() if needed)

    def convert(value: Any, path: str, entities: Entities) -> Any:
        if type(value) is not dict:
            raise ArgumentError(path, f"expected an object, got {_kind(value)}")
        out: dict[str, Any] = {}
        for name, item in value.items():
            slot = attributes.get(name)
            if slot is None:
                raise ArgumentError(f"{path}.{name}", "not in the tool's input schema, so no policy could see it")
            out[name] = slot[0](item, f"{path}.{name}", entities)
        if not required.issubset(out):
            missing = sorted(required - out.keys())
            raise ArgumentError(f"{path}.{missing[0]}", "required by the tool's input schema, missing")
        return out
    return convert


def _union(choices: list[tuple[str, Converter]]) -> Converter:
    def convert(value: Any, path: str, entities: Entities) -> Any:
        for name, choice in choices:
            found: Entities = []
            try:
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


def _tagged(entity_type: str, shape: Mapping[str, tuple[Converter, bool]], tags: Converter | None) -> Converter:
    required = frozenset(name for name, (_, needed) in shape.items() if needed)

    def convert(value: Any, path: str, entities: Entities) -> Any:
        if type(value) is not dict:
            raise ArgumentError(path, f"expected an object, got {_kind(value)}")
        attrs: dict[str, Any] = {}
        tag_values: dict[str, Any] = {}
        for name, item in value.items():
            if name in shape:
                attrs[name] = shape[name][0](item, f"{path}.{name}", entities)
            elif tags is not None:
                tag_values[name] = tags(item, f"{path}.{name}", entities)
            else:
                raise ArgumentError(f"{path}.{name}", "not in the tool's input schema, so no policy could see it")
        if not required.issubset(attrs):
            raise ArgumentError(f"{path}.{sorted(required - attrs.keys())[0]}", "required, missing")
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
            canonical = json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False)
        except (TypeError, ValueError):
            raise ArgumentError(path, "not a JSON value") from None
        return {"__entity": {"type": entity_type, "id": hashlib.sha256(canonical.encode()).hexdigest()}}
    return convert


class SchemaTypeError(ValueError):
    """The Cedar schema uses a type Deputy cannot convert arguments to."""


class TypeCompiler:
    """Compiles converters for the types of one Cedar JSON schema (all namespaces), caching named types."""

    def __init__(self, schema: Mapping[str, Any], root: str) -> None:
        self.schema = schema
        self.root = root
        self.named: dict[str, Converter] = {}

    def compile(self, ty: Mapping[str, Any], namespace: str) -> Converter:
        kind = ty.get("type")
        if kind == "Set":
            return _set(self.compile(ty["element"], namespace))
        if kind == "Record":
            attributes = {name: (self.compile(sub, namespace), sub.get("required", True))
                          for name, sub in ty.get("attributes", {}).items()}
            members = [(_UNION_MEMBER.match(name), name) for name in attributes]
            if attributes and all(m is not None and not attributes[name][1] for m, name in members):
                order = sorted(attributes, key=lambda name: int(name[len("typeChoice"):]))
                return _union([(name, attributes[name][0]) for name in order])
            return _record(attributes)
        if kind in ("Entity", "EntityOrCommon", "Extension"):
            return self.named_type(str(ty["name"]), namespace)
        if isinstance(kind, str):  # a common type referenced by its name alone
            return self.named_type(kind, namespace)
        raise SchemaTypeError(f"unsupported schema type {ty!r}")

    def named_type(self, name: str, namespace: str) -> Converter:
        space, _, base = name.rpartition("::")
        space = space or namespace
        full = f"{space}::{base}"
        if full in self.named:
            return self.named[full]
        definitions = self.schema.get(space, {})
        if base in definitions.get("commonTypes", {}):
            def deferred(value: Any, path: str, entities: Entities) -> Any:  # allows self-reference
                return self.named[full](value, path, entities)
            self.named[full] = deferred
            self.named[full] = self.compile(definitions["commonTypes"][base], space)
        elif base in definitions.get("entityTypes", {}):
            self.named[full] = self.entity(full, definitions["entityTypes"][base], space)
        elif "::" not in name and name in BUILTINS:
            return BUILTINS[name]
        else:
            raise SchemaTypeError(f"unknown type {name} in {namespace}")
        return self.named[full]

    def entity(self, full: str, definition: Mapping[str, Any], namespace: str) -> Converter:
        if "enum" in definition:
            return _enum(full, frozenset(definition["enum"]))
        if full == f"{self.root}::Null":
            return _null(full)
        if full == f"{self.root}::Unknown":
            return _opaque(full)
        shape = definition.get("shape", {"type": "Record", "attributes": {}})
        attributes = {name: (self.compile(sub, namespace), sub.get("required", True))
                      for name, sub in shape.get("attributes", {}).items()}
        tags = self.compile(definition["tags"], namespace) if "tags" in definition else None
        return _tagged(full, attributes, tags)
