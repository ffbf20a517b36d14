"""Policy files: ``*.cedar`` read from one directory, parsed, named, and located in their file.

Files are read in sorted name order. Each policy is named by its ``@id("...")``
annotation when it has one, else ``<file name>#<n>`` (the n-th policy of the file,
counting from 1), so every decision names something an author can find; two
policies with the same name are an error. Cedar (through ``cedarpy``) reports
parse and validation errors without a position, so this module finds one itself:
each policy's start is known from a scan of the file (strings and ``//`` comments
skipped); a syntax error is narrowed to the first token after which the text can no
longer be the start of a policy (Cedar's "unexpected end of input" marks a text that
is fine so far); other errors point at the name they quote, else at the policy.

Annotations Deputy reads (only on ``permit``): ``@requires_scope("a b")`` and
``@approval("required")`` or ``@approval("self")`` (see :mod:`deputy.policy.decision`); ``@id`` and
``@description`` are also allowed. Any other annotation is an error, so a misspelt
``@aproval`` cannot silently turn into an unconditional permit.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cedarpy

KNOWN_ANNOTATIONS = ("id", "requires_scope", "approval", "description")
APPROVAL_KINDS = ("required", "self")
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"?|::|==|!=|<=|>=|&&|\|\||[A-Za-z0-9_]+|\S')
_QUOTED = re.compile(r"`([^`]+)`")
_END_OF_INPUT = "unexpected end of input"


@dataclass(frozen=True, slots=True)
class PolicyProblem:
    file: str
    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.message}"


class PolicyLoadError(Exception):
    """The policy set cannot be used; every problem names file, line and column."""

    def __init__(self, problems: Sequence[PolicyProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass(frozen=True, slots=True)
class PolicySource:
    policy_id: str
    file: str
    line: int
    column: int
    effect: str
    text: str
    est: dict[str, Any]
    requires_scopes: frozenset[str]
    approval: bool
    self_approval: bool  # @approval("self"): the requesting user may approve their own call


@dataclass(frozen=True, slots=True)
class PolicyFile:
    name: str
    text: str
    # Offset of each line's first character, found once: every policy of the file asks for its position, and a
    # scan per question made loading quadratic in the file's length.
    line_starts: tuple[int, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "line_starts", (0, *(m.end() for m in re.finditer("\n", self.text))))

    def position(self, offset: int) -> tuple[int, int]:
        """1-based (line, column) of ``offset``; a line ends just past its ``\\n`` (a ``\\r`` counts as a column)."""
        line = bisect.bisect_right(self.line_starts, offset)
        return line, offset - self.line_starts[line - 1] + 1

    def problem(self, offset: int, message: str) -> PolicyProblem:
        return PolicyProblem(self.name, *self.position(offset), message)


def read_policy_files(directory: Path) -> list[PolicyFile]:
    if not directory.is_dir():
        raise PolicyLoadError([PolicyProblem(str(directory), 0, 0, "no such policy directory")])
    try:
        paths = sorted(path for path in directory.glob("*.cedar") if path.is_file())
        return [PolicyFile(path.name, path.read_text(encoding="utf-8")) for path in paths]
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyLoadError([PolicyProblem(str(directory), 0, 0, f"cannot read: {exc}")]) from None


def policy_set_version(files: Sequence[PolicyFile]) -> str:
    """SHA-256 over the sorted file names and contents (length-prefixed, so no two sets collide by framing)."""
    digest = hashlib.sha256()
    for file in sorted(files, key=lambda f: f.name):
        for part in (file.name.encode(), file.text.encode()):
            digest.update(len(part).to_bytes(8, "big") + part)
    return digest.hexdigest()


def statement_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of each statement: from its first significant character to just past its ``;``."""
    spans: list[tuple[int, int]] = []
    start: int | None = None
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            newline = text.find("\n", i)
            i = n if newline < 0 else newline
            continue
        if c.isspace():
            i += 1
            continue
        if start is None:
            start = i
        if c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
        elif c == ";":
            spans.append((start, i + 1))
            start = None
        i += 1
    if start is not None:
        spans.append((start, n))
    return spans


def _parse(text: str) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(cedarpy.policies_to_json_str(text))
    return parsed


def _syntax_error_offset(statement: str, message: str) -> int:
    """Offset in ``statement`` of the token after which it cannot be a policy's beginning any more."""
    tokens = list(_TOKEN.finditer(statement))
    low, high = 0, len(tokens)  # invariant: the prefix ending with tokens[low - 1] parses "so far"
    while low < high:
        middle = (low + high) // 2
        try:
            _parse(statement[: tokens[middle].end()])
            fine = True
        except ValueError as exc:
            fine = _END_OF_INPUT in str(exc)
        if fine:
            low = middle + 1
        else:
            high = middle
    # Cedar sometimes notices a bad token only at the next one; step back to the token it names.
    named = re.match(r"unexpected token `(.+)`", message)
    for index in range(min(low, len(tokens) - 1), max(low - 3, -1), -1):
        if named is not None and tokens[index].group() == named.group(1):
            return tokens[index].start()
    return tokens[low].start() if low < len(tokens) else len(statement.rstrip())


def _quoted_offset(statement: str, message: str) -> int:
    """Where in ``statement`` the first name ``message`` quotes (or its last part) occurs; 0 if nowhere."""
    for quoted in map(str, _QUOTED.findall(message)):
        if re.fullmatch(r"policy\d+", quoted):
            continue
        last = re.split(r"\.|::", quoted)[-1]
        found = statement.find(quoted)
        if found >= 0:
            return found + quoted.rfind(last)
        word = re.search(rf"(?<![A-Za-z0-9_]){re.escape(last)}(?![A-Za-z0-9_])", statement)
        if word is not None:
            return word.start()
    return 0


def parse_policy_files(files: Sequence[PolicyFile]) -> list[PolicySource]:
    """Every policy of ``files`` in order, named and checked; raises :class:`PolicyLoadError`."""
    sources: list[PolicySource] = []
    problems: list[PolicyProblem] = []
    for file in files:
        spans = statement_spans(file.text)
        try:
            parsed = _parse(file.text)
        except ValueError as exc:
            problems.append(_locate_parse_error(file, spans, str(exc)))
            continue
        if parsed.get("templates"):
            problems.append(file.problem(spans[0][0] if spans else 0, "templates (?principal, ?resource) are not used"))
            continue
        policies = sorted(parsed.get("staticPolicies", {}).items(), key=lambda item: int(item[0][len("policy"):]))
        for index, (_, est) in enumerate(policies):
            start, end = spans[index] if index < len(spans) else (0, len(file.text))
            source = _source(file, index, start, file.text[start:end], est, problems)
            if source is not None:
                sources.append(source)
    seen: dict[str, PolicySource] = {}
    for source in sources:
        other = seen.setdefault(source.policy_id, source)
        if other is not source:
            problems.append(PolicyProblem(source.file, source.line, source.column,
                                          f"policy id {source.policy_id!r} is also used at "
                                          f"{other.file}:{other.line}:{other.column}"))
    if problems:
        raise PolicyLoadError(problems)
    return sources


def _locate_parse_error(file: PolicyFile, spans: list[tuple[int, int]], message: str) -> PolicyProblem:
    for start, end in spans:
        statement = file.text[start:end]
        try:
            _parse(statement)
        except ValueError as exc:
            text = str(exc)
            syntax = text.startswith(("unexpected token", "invalid token", _END_OF_INPUT))
            offset = _syntax_error_offset(statement, text) if syntax else _quoted_offset(statement, text)
            return file.problem(start + offset, text)
    return file.problem(0, message)


def _source(file: PolicyFile, index: int, start: int, statement: str, est: dict[str, Any],
            problems: list[PolicyProblem]) -> PolicySource | None:
    annotations: dict[str, str | None] = est.get("annotations", {})
    effect = est["effect"]
    count = len(problems)
    for name, value in annotations.items():
        at = start + max(statement.find(f"@{name}"), 0)
        if name not in KNOWN_ANNOTATIONS:
            problems.append(file.problem(at, f"unknown annotation @{name} (known: "
                                              + ", ".join(f"@{k}" for k in KNOWN_ANNOTATIONS) + ")"))
        elif name in ("requires_scope", "approval") and effect != "permit":
            problems.append(file.problem(at, f"@{name} only applies to permit policies"))
        elif name == "approval" and value not in APPROVAL_KINDS:
            problems.append(file.problem(at, '@approval takes "required" (another user approves) or "self" '
                                             '(the requesting user may approve too)'))
        elif name in ("id", "requires_scope") and not (value or "").strip():
            problems.append(file.problem(at, f"@{name} needs a non-empty value"))
    if len(problems) > count:
        return None
    line, column = file.position(start)
    return PolicySource(
        policy_id=annotations.get("id") or f"{file.name}#{index + 1}", file=file.name, line=line, column=column,
        effect=effect, text=statement, est=est,
        requires_scopes=frozenset((annotations.get("requires_scope") or "").split()),
        approval=annotations.get("approval") in APPROVAL_KINDS, self_approval=annotations.get("approval") == "self")


def validation_problems(sources: Sequence[PolicySource], errors: Sequence[Any]) -> list[PolicyProblem]:
    """Cedar's validation errors (whose ``policy_id`` is ``policy<N>`` over the sources in order), located."""
    problems = []
    for error in errors:
        message = str(error.error)
        match = re.fullmatch(r"policy(\d+)", str(error.policy_id))
        if match is None or int(match.group(1)) >= len(sources):
            problems.append(PolicyProblem("<policies>", 0, 0, message))
            continue
        source = sources[int(match.group(1))]
        message = re.sub(r"^for policy `policy\d+`, ", "", message)
        file = PolicyFile(source.file, source.text)
        line, column = file.position(_quoted_offset(source.text, message))
        if line == 1:
            column += source.column - 1
        problems.append(PolicyProblem(source.file, source.line + line - 1, column,
                                      f"policy {source.policy_id!r}: {message}"))
    return problems
