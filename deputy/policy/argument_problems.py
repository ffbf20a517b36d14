"""Why a call's arguments do not fit its tool's input schema, said to the client and the audit log, bounded.

A conversion (:mod:`deputy.policy.arguments`) does not stop at the first argument that does not fit:
it collects every problem, up to :data:`MAX_PROBLEMS` (then stops walking and says there were more),
so a user who forgot one argument and mistyped another learns both at once.

Each :class:`ArgumentProblem` names *where* and *why*, never *what*:

* ``argument`` — a JSON Pointer (RFC 6901) into the call's ``arguments``: ``/when``,
  ``/window/start``, ``/points/1/x``; ``""`` is the arguments as a whole (e.g. not an object).
  A pointer, not a dotted path, because argument names may themselves hold ``.``, ``[`` or ``/``:
  RFC 6901 §3 escapes ``~`` as ``~0`` and ``/`` as ``~1``, so every name is told apart from every
  path, and it is the form JSON Schema validators report (JSON Schema 2020-12 §12.4.2,
  ``instanceLocation``). Names come from the client (an argument the schema does not declare)
  or the upstream (its schema), so the pointer is made safe to show: each character that is not
  shown as itself — controls, format characters such as bidirectional overrides, line and
  paragraph separators, lone surrogates (Unicode categories Cc, Cf, Cs, Zl, Zp) — becomes
  U+FFFD, and a pointer longer than :data:`MAX_POINTER` characters is cut and ends with "…"
  (it then names a prefix, no longer an exact location).
* ``problem`` — Deputy's own words, the expected type or format (``expected an integer, got a
  string``), at most :data:`MAX_PROBLEM` characters. The value itself is never quoted: it may be a
  secret, and the answer and the audit record would keep it.
"""

from __future__ import annotations

import contextlib
import unicodedata
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Final

MAX_PROBLEMS: Final = 10
MAX_POINTER: Final = 128
MAX_PROBLEM: Final = 240
REASON: Final = "arguments_invalid"
_UNSHOWN: Final = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})

Segment = str | int
Found = tuple[tuple[Segment, ...], str]

# Inside a trial whose problems nobody will read (one branch of an ``anyOf``), the first problem ends the walk:
# collecting more there would multiply the work by the bound at every nested union.
_FIRST_ONLY: ContextVar[bool] = ContextVar("first_problem_only", default=False)


@contextlib.contextmanager
def first_problem_only() -> Iterator[None]:
    """Within this block a conversion stops at its first problem (it is only asked whether the value fits)."""
    token = _FIRST_ONLY.set(True)
    try:
        yield
    finally:
        _FIRST_ONLY.reset(token)


@dataclass(frozen=True, slots=True)
class ArgumentProblem:
    """One argument that does not fit: where (a bounded, printable JSON Pointer) and why (no value)."""

    argument: str
    problem: str

    def as_data(self) -> dict[str, str]:
        return {"argument": self.argument, "problem": self.problem}


def _shown(text: str, limit: int) -> str:
    """``text`` with every character not shown as itself replaced by U+FFFD, cut to ``limit`` characters."""
    cut = len(text) > limit
    text = text[:limit - 1] if cut else text
    text = "".join("\ufffd" if unicodedata.category(c) in _UNSHOWN else c for c in text)
    return text + "…" if cut else text


def pointer(segments: Iterable[Segment]) -> str:
    """The RFC 6901 pointer of ``segments`` (member names and array indices), bounded and printable."""
    parts = []
    length = 0
    for segment in segments:
        # Each name is cut before it is escaped: a megabyte-long name costs no more than a short one.
        token = str(segment)[:MAX_POINTER + 1].replace("~", "~0").replace("/", "~1")  # RFC 6901 §3
        parts.append(token)
        length += len(token) + 1
        if length > MAX_POINTER:
            break
    return _shown("".join("/" + part for part in parts), MAX_POINTER)


def problem_text(message: str) -> str:
    return _shown(message, MAX_PROBLEM)


class ArgumentError(ValueError):
    """Arguments that do not fit their Cedar types: every problem found (up to :data:`MAX_PROBLEMS`).

    ``path`` names the first in Cedar's terms (``input.opts.depth``), for logs and the CLI; ``problems``
    are what a client and the audit log are told. Each problem is kept as the path *below* the converter
    that raised it; a container that catches it puts its own member name or index in front (:meth:`under`).
    """

    def __init__(self, path: str, message: str, found: list[Found] | None = None, more: bool = False) -> None:
        super().__init__(f"{path} does not fit the tool's schema: {message}")
        self.path = path
        self.message = message
        self.found: list[Found] = [((), message)] if found is None else found
        self.more = more

    def under(self, segment: Segment) -> list[Found]:
        return [((segment, *segments), message) for segments, message in self.found]

    @property
    def problems(self) -> tuple[ArgumentProblem, ...]:
        return tuple(ArgumentProblem(pointer(segments), problem_text(message))
                     for segments, message in self.found[:MAX_PROBLEMS])

    @property
    def truncated(self) -> bool:
        """Whether there were more problems than :attr:`problems` lists."""
        return self.more or len(self.found) > MAX_PROBLEMS


class Problems:
    """The problems found inside one container (an object or an array), in the order met."""

    def __init__(self) -> None:
        self.found: list[Found] = []
        self.first: tuple[str, str] | None = None  # (Cedar path, message) of the first, for ArgumentError
        self.more = False

    @property
    def full(self) -> bool:
        """Past :data:`MAX_PROBLEMS`: the walk stops here (the answer says there were more)."""
        return self.more or len(self.found) > MAX_PROBLEMS or (bool(self.found) and _FIRST_ONLY.get())

    def add(self, segment: Segment, error: ArgumentError) -> None:
        """The problems ``error`` found in the member or element ``segment``."""
        if self.first is None:
            self.first = (error.path, error.message)
        self.found.extend(error.under(segment))
        self.more = self.more or error.more

    def here(self, segment: Segment, path: str, message: str) -> None:
        """A problem with the member ``segment`` itself (missing, or not declared)."""
        self.add(segment, ArgumentError(path, message))

    def check(self) -> None:
        """Raise the problems found, if any."""
        if self.first is not None:
            path, message = self.first
            raise ArgumentError(path, message, self.found[:MAX_PROBLEMS + 1], self.full)
