"""Outside text on the operator's terminal: shown as it is, never parsed as markup, never acting.

The CLI prints what others chose: client names and metadata (from registrations and client
metadata documents), tool names and arguments (from agents and upstream servers), records and
origins (from audit logs, proofs and exports). Two layers keep the terminal the operator's:

- :func:`shown` and :func:`line` make a :class:`rich.text.Text` of such values. A ``Text`` is never
  parsed as Rich markup nor for ``:emoji:`` codes (``x[/]`` stays ``x[/]``, ``[conceal]`` stays
  visible), and every character that would act on the terminal is shown as its escape
  (:func:`deputy.display_text.visible`). Every command prints outside values through these.
- :func:`operator_console` makes the consoles of :mod:`deputy.cli.common`, whose render hook passes
  the text of everything printed through the same function, so a value printed some other way
  still cannot act. It cannot undo markup, which Rich parses before rendering: hence the first layer.
"""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console, ConsoleOptions, ConsoleRenderable, RenderHook, RenderResult
from rich.segment import Segment
from rich.text import Text

from deputy.display_text import visible, visible_json


def shown(value: object, style: str = "") -> Text:
    """``value`` as text that only shows: no markup, no emoji code, no acting character in it."""
    return Text(visible(str(value)), style=style)


def line(*parts: object, style: str = "") -> Text:
    """A message: ``Text`` parts kept as built (with their styles), any other part as :func:`shown` shows it."""
    return Text.assemble(*(part if isinstance(part, Text) else shown(part) for part in parts), style=style)


def shown_json(value: Any) -> Text:
    """A JSON value laid out for reading, still JSON: its strings' acting characters written as JSON escapes,
    even those ``json.dumps`` leaves raw (DEL, C1 controls, bidi controls)."""
    return Text(visible_json(json.dumps(value, ensure_ascii=False, indent=2, sort_keys=True)))


class _Neutralised:
    """A renderable whose segments' text shows every acting character as its escape."""

    def __init__(self, renderable: ConsoleRenderable) -> None:
        self.renderable = renderable

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        for segment in console.render(self.renderable, options):
            # Control segments are Rich's own cursor movements (progress bars), never outside text.
            if segment.control or (segment.text.isascii() and segment.text.isprintable()):
                yield segment
            else:
                yield Segment(visible(segment.text, newlines=True), segment.style)


class _NeutraliseAll(RenderHook):
    def process_renderables(self, renderables: list[ConsoleRenderable]) -> list[ConsoleRenderable]:
        return [_Neutralised(r) for r in renderables]


def operator_console(stderr: bool = False, **options: Any) -> Console:
    """A console whose output cannot carry an acting character, nor turn ``:name:`` into an emoji."""
    console = Console(stderr=stderr, emoji=False, **options)
    console.push_render_hook(_NeutraliseAll())
    return console
