"""Outside text shown to a person: every character that would act instead of show is shown as an escape.

Names, tool names, arguments and URIs come from clients, client metadata documents, upstream servers
and files; the operator's terminal and the approver's browser must show them, never obey them. A
terminal obeys C0 and C1 controls (ECMA-48 §5: ``ESC [ 2 J`` clears the screen; xterm's OSC 8 makes
links and OSC 52 writes the clipboard; CR and BS overwrite what was shown). A terminal and a browser
both obey the Unicode bidirectional controls (UAX #9 §2: U+202A to U+202E, U+2066 to U+2069, U+200E,
U+200F, U+061C), which reorder what follows so that ``evil\\u202egnp.exe`` reads as another name,
and hide the default-ignorable code points (Unicode §5.21: zero-width characters, tags, variation
selectors, fillers), which can carry text nobody sees. A lone surrogate cannot even be written to
a UTF-8 stream. Each such character is shown as the escape Python's ``repr`` writes
(``\\x1b``, ``\\u202e``, ``\\U000e0041``; ``\\n``, ``\\r``, ``\\t``); everything else is kept, so
names in any script stay readable. A backslash is kept too: the aim is that nothing acts, and a
literal ``\\u202e`` acts no more than an escaped one.

A command Deputy tells an operator to run (``deputy clients approve ID``, on a page, a terminal or in a log) is
written by :func:`command_line`: outside text in it (a client id is a URL its author chose, where ``$( )``, ``;``
and quotes are all valid) is quoted for a POSIX shell, so the command, pasted, runs Deputy's command with that
text as one argument and nothing else. Whatever shows the command still shows it through :func:`visible`.
"""

from __future__ import annotations

import shlex
import unicodedata

# Categories whose every character acts or is invisible: controls (C0, DEL, C1), format characters
# (bidi controls, zero-width characters, tags, soft hyphen), surrogates, line and paragraph separators.
_ACTING_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})

# Default-ignorable code points outside those categories (Unicode DerivedCoreProperties.txt):
# invisible, so they could hide text; none is needed to read a name.
_IGNORABLE_RANGES = (
    (0x034F, 0x034F),  # combining grapheme joiner
    (0x115F, 0x1160),  # Hangul choseong and jungseong fillers
    (0x17B4, 0x17B5),  # Khmer inherent vowels
    (0x180B, 0x180F),  # Mongolian free variation selectors
    (0x3164, 0x3164),  # Hangul filler
    (0xFE00, 0xFE0F),  # variation selectors
    (0xFFA0, 0xFFA0),  # halfwidth Hangul filler
    (0xE0000, 0xE0FFF),  # tags, variation selectors supplement, reserved
)

_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def acts(char: str) -> bool:
    """Whether a terminal or a browser would act on ``char`` or hide it, rather than show it."""
    code = ord(char)
    return unicodedata.category(char) in _ACTING_CATEGORIES or any(
        low <= code <= high for low, high in _IGNORABLE_RANGES
    )


def escape_char(char: str) -> str:
    """``char`` as the escape that names it: ``\\n``, ``\\x1b``, ``\\u202e`` or ``\\U000e0041``."""
    code = ord(char)
    if char in _SHORT:
        return _SHORT[char]
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


class _Shown(dict[int, str]):
    """A ``str.translate`` table filled in on first sight of each code point: translation stays in C."""

    def __missing__(self, code: int) -> str:
        char = chr(code)
        shown = escape_char(char) if acts(char) else char
        self[code] = shown
        return shown


_ONE_LINE = _Shown()
_LINES = _Shown({ord("\n"): "\n"})


def visible(text: str, *, newlines: bool = False) -> str:
    """``text`` with every character that acts or hides shown as its escape.

    ``newlines=True`` keeps line feeds, for text whose lines Deputy laid out itself (indented
    JSON); a one-line field shows a line feed as ``\\n``, so no value can forge another row.
    """
    if text.isascii() and text.isprintable():
        return text
    return text.translate(_LINES if newlines else _ONE_LINE)


def visible_json(text: str) -> str:
    """JSON text (as ``json.dumps`` writes it) with every acting character inside its strings written as a
    JSON escape (RFC 8259 §7: ``\\u202e``, a surrogate pair beyond U+FFFF): the same JSON value, nothing
    left to act. Its line feeds are layout (``json.dumps`` escapes those inside strings), so they stay."""
    if text.isascii() and text.isprintable():
        return text
    return "".join(_json_escape(c) if c != "\n" and acts(c) else c for c in text)


def _json_escape(char: str) -> str:
    code = ord(char)
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    code -= 0x10000
    return f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}"


def command_line(*words: str) -> str:
    """``words`` as one POSIX shell command line: each quoted where the shell would read it otherwise
    (``shlex.join``; POSIX.1-2017 XCU §2.2.2: nothing inside single quotes is special), so that a shell splits
    the line back into exactly ``words`` and expands, substitutes and runs nothing in them."""
    return shlex.join(words)
