"""Issue 12, operator terminals: the one function that shows outside text, and the consoles commands print through.

:func:`deputy.display_text.visible` turns any string into one where nothing acts on a terminal or a
browser (controls, bidi overrides, invisible characters show as escapes) while every other character,
in any script, is kept; :mod:`deputy.cli.terminal_text` builds Rich ``Text`` from it (never markup) and
makes consoles that neutralise whatever is printed through them.
"""

from __future__ import annotations

import io
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from rich.table import Table

from deputy.cli.terminal_text import line, operator_console, shown, shown_json
from deputy.display_text import acts, escape_char, visible, visible_json

VECTORS = [
    ("plain text", "plain text"),
    ("\x1b]52;c;aGVsbG8=\x07", "\\x1b]52;c;aGVsbG8=\\x07"),  # OSC 52: write the clipboard
    ("\x1b]8;;https://evil.example\x1b\\click\x1b]8;;\x1b\\", "\\x1b]8;;https://evil.example\\x1b\\click\\x1b]8;;\\x1b\\"),
    ("\x1b[2J\x1b[H", "\\x1b[2J\\x1b[H"),
    ("ok\rEVIL", "ok\\rEVIL"),
    ("abc\b\b\bxyz", "abc\\x08\\x08\\x08xyz"),
    ("a\nb\tc", "a\\nb\\tc"),
    ("\x7f\x85\x9b\x9d", "\\x7f\\x85\\x9b\\x9d"),  # DEL and C1: NEL, CSI, OSC
    ("evil\u202egnp.exe", "evil\\u202egnp.exe"),
    ("\u202a\u202b\u202c\u202d\u2066\u2067\u2068\u2069\u200e\u200f\u061c",
     "\\u202a\\u202b\\u202c\\u202d\\u2066\\u2067\\u2068\\u2069\\u200e\\u200f\\u061c"),
    ("zero\u200bwidth\u200c\u200d\u2060\ufeff", "zero\\u200bwidth\\u200c\\u200d\\u2060\\ufeff"),
    ("tag\U000e0041\U000e007f", "tag\\U000e0041\\U000e007f"),
    ("vs\ufe0f\u3164\u034f", "vs\\ufe0f\\u3164\\u034f"),
    ("line\u2028para\u2029", "line\\u2028para\\u2029"),
    ("lone \ud800 surrogate", "lone \\ud800 surrogate"),
    ("Zoë, Ελένη, Дмитрий, محمد, 李明, 🙂", "Zoë, Ελένη, Дмитрий, محمد, 李明, 🙂"),  # readable in any script
    ("x[/] [conceal]s[/conceal] :warning: \\u202e", "x[/] [conceal]s[/conceal] :warning: \\u202e"),
]


@pytest.mark.parametrize(("outside", "expected"), VECTORS)
def test_visible_shows_every_acting_character_as_its_escape(outside: str, expected: str) -> None:
    """Issue 12: escape sequences, C1 controls, bidi overrides and invisible characters reached terminals raw."""
    assert visible(outside) == expected


def test_newlines_kept_only_when_asked() -> None:
    assert visible('{\n  "a": "\u202e"\n}', newlines=True) == '{\n  "a": "\\u202e"\n}'
    assert visible("a\nb\r", newlines=True) == "a\nb\\r"


@given(st.text(alphabet=st.characters(blacklist_categories=())))
def test_nothing_acting_survives_and_nothing_else_changes(text: str) -> None:
    out = visible(text)
    assert not any(acts(c) for c in out)
    out.encode("utf-8")  # no lone surrogate left to fail a UTF-8 stream
    assert out == "".join(escape_char(c) if acts(c) else c for c in text)


def test_acting_categories_are_all_escaped() -> None:
    for code in (*range(0x00, 0x20), *range(0x7F, 0xA0), 0x00AD, 0x2028, 0x2029, 0xFEFF, 0xFFF9, 0xE0001):
        assert acts(chr(code)), hex(code)
    for char in "a Ä€→…│━":
        assert not acts(char)


def printed(*objects: object) -> str:
    buffer = io.StringIO()
    operator_console(file=buffer, width=200).print(*objects)
    return buffer.getvalue()


HOSTILE = "x[/][conceal]secret[/conceal]\x1b[2J\u202e:warning:"


def test_shown_is_never_markup_nor_emoji() -> None:
    """Issue 12: ``x[/]`` made `approvals list` raise MarkupError; ``[conceal]`` hid text; ``:name:`` became emoji."""
    out = printed(shown(HOSTILE))
    assert out == "x[/][conceal]secret[/conceal]\\x1b[2J\\u202e:warning:\n"
    table = Table("a", "b")
    table.add_row(shown(HOSTILE), line("tool ", HOSTILE, shown(" (ok)", "green")))
    out = printed(table)
    assert out.count("x[/][conceal]secret[/conceal]\\x1b[2J\\u202e:warning:") == 2 and "\x1b" not in out


def test_the_consoles_neutralise_what_is_printed_some_other_way() -> None:
    """Issue 12, the class: a value printed without ``shown`` still cannot act on the terminal."""
    out = printed("name: \x1b]52;c;aGVsbG8=\x07 \u202eevil\x9b :warning:")
    assert out == "name: \\x1b]52;c;aGVsbG8= \\u202eevil\\x9b :warning:\n"  # Rich itself drops BEL
    table = Table("name")
    table.add_row("a\x1b[2Jb")
    assert "\x1b" not in printed(table) and "a\\x1b[2Jb" in printed(table)


def test_styles_still_reach_a_terminal() -> None:
    """Deputy's own colours are Rich styles, not text: the neutralising hook leaves them alone."""
    buffer = io.StringIO()
    operator_console(file=buffer, force_terminal=True, color_system="standard").print(
        shown("denied", "red"), line(" for ", "\x1b[2J"))
    out = buffer.getvalue()
    assert "\x1b[31mdenied\x1b[0m" in out and "\\x1b[2J" in out and "\x1b[2J" not in out


def test_shown_json_escapes_what_json_leaves_raw_and_stays_json() -> None:
    value = {"k\u202e": ["\u202e\x9b\x7f\x1b\ud800\U000e0041", "Zoë"]}
    text = shown_json(value).plain
    assert text == ('{\n  "k\\u202e": [\n    "\\u202e\\u009b\\u007f\\u001b\\ud800\\udb40\\udc41",\n'
                    '    "Zoë"\n  ]\n}')
    assert json.loads(text) == value


ANY_TEXT = st.text(alphabet=st.characters(blacklist_categories=()))


@given(st.recursive(st.none() | st.booleans() | st.integers() | ANY_TEXT,
                    lambda inner: st.lists(inner) | st.dictionaries(ANY_TEXT, inner)))
def test_visible_json_is_the_same_value_with_nothing_acting(value: object) -> None:
    text = visible_json(json.dumps(value, ensure_ascii=False, indent=1))
    assert json.loads(text) == value
    assert not any(acts(c) for c in text if c != "\n")


def test_a_lone_surrogate_prints() -> None:
    """JSON admits ``"\\ud800"``; written raw it would crash the command on a UTF-8 stream."""
    assert printed(shown("a\ud800b")) == "a\\ud800b\n"
