"""Making MCP names acceptable to the schema generator, and taking them back afterwards.

``cedar-policy-mcp-schema-generator`` parses every tool name and every property name
of a tool's ``inputSchema`` as a Cedar identifier (it builds type names and
namespaces such as ``<tool>Input`` and ``Deputy::<tool>::Input::<property>`` from
them), so it refuses ``search-files``, ``fs.read``, ``file-path``, ``ü`` and Cedar's
reserved words (``if``, ``in``, ``has``, ``like``, ``is``, ``then``, ``else``, ``true``,
``false``, anything containing ``__cedar``), while MCP allows such names.

Before generation each such name is replaced by a *stand-in*: an identifier made of
the name's letters and digits plus the first 10 hex digits of its SHA-256
(``search-files`` → ``x_search_files_6e38ddcb70``); after generation the action and
record attributes get their real names back, so policies read
``Deputy::Action::"search-files"`` and ``context.input["file-path"]``. Only the
internal names of generated types and namespaces keep the stand-in. A stand-in that
equals a real name of the same tool list is refused (:class:`NameClash`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_NOT_ALNUM = re.compile(r"[^A-Za-z0-9]+")
RESERVED = frozenset({"true", "false", "if", "then", "else", "in", "is", "like", "has"})


class NameClash(ValueError):
    """A stand-in equals a real name, so the renaming could not be undone unambiguously."""


def is_cedar_identifier(name: str) -> bool:
    return bool(_IDENTIFIER.match(name)) and name not in RESERVED and "__cedar" not in name


def stand_in(name: str) -> str:
    """``name`` itself when the generator accepts it, else a deterministic identifier standing in for it."""
    if is_cedar_identifier(name):
        return name
    stem = _NOT_ALNUM.sub("_", name).strip("_")[:40]
    return f"x_{stem}_{hashlib.sha256(name.encode()).hexdigest()[:10]}"


class Renamer:
    """Collects stand-ins (stand-in → real name) while input schemas are prepared."""

    def __init__(self) -> None:
        self.real: dict[str, str] = {}
        self.seen: set[str] = set()

    def __call__(self, name: str) -> str:
        self.seen.add(name)
        alias = stand_in(name)
        if alias != name:
            self.real[alias] = name
        return alias

    def check(self) -> None:
        clash = sorted(self.seen & self.real.keys())
        if clash:
            raise NameClash(f"the name {clash[0]!r} is also the stand-in for {self.real[clash[0]]!r}")

    def json_schema(self, node: Any) -> Any:
        """A copy of a JSON Schema with property names, ``required`` entries and ``$defs`` names renamed."""
        if isinstance(node, list):
            return [self.json_schema(item) for item in node]
        if not isinstance(node, Mapping):
            return node
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in ("properties", "$defs", "definitions") and isinstance(value, Mapping):
                out[key] = {self(str(name)): self.json_schema(sub) for name, sub in value.items()}
            elif key == "required" and isinstance(value, list):
                out[key] = [self(item) if isinstance(item, str) else item for item in value]
            elif key == "$ref" and isinstance(value, str) and value.startswith(("#/$defs/", "#/definitions/")):
                prefix, _, name = value.rpartition("/")
                out[key] = f"{prefix}/{self(name)}"
            else:
                out[key] = self.json_schema(value)
        return out

    def restore_attributes(self, node: Any) -> None:
        """Give every record attribute in a generated Cedar JSON schema its real name back, in place."""
        if isinstance(node, list):
            for item in node:
                self.restore_attributes(item)
        elif isinstance(node, dict):
            attributes = node.get("attributes")
            if node.get("type") == "Record" and isinstance(attributes, dict) and self.real:
                node["attributes"] = {self.real.get(name, name): ty for name, ty in attributes.items()}
            for value in node.values():
                self.restore_attributes(value)
