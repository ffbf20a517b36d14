"""Files the CLI reads whole: at most a bound is read, and a file past it is refused before anything is parsed.

A proof, a trusted checkpoint, a token, a tools list or a test file is small by its nature; one that is not
is a mistake or an attack, and reading it whole first (``deputy audit check-proof`` read 2 M lines, 670 MB,
before refusing a proof of at most 63 hashes) costs the operator's memory and time for nothing. So a reader
takes ``max_bytes + 1`` bytes at most, and counts lines only in what it took.

:class:`InputTooLarge` is an ``OSError``: every command already tells the operator it cannot read a file.
"""

from __future__ import annotations

import sys
from pathlib import Path

KIB = 1024
MIB = 1024 * KIB

# A tlog-proof carries the record's bytes in base64: a call's record holds its arguments, from a request body
# of up to 4 MiB (deputy.gateway.proxy.MAX_REQUEST_BODY); its other lines are at most 63 hashes and a note.
PROOF_BYTES = 8 * MIB
PROOF_LINES = 1024
CHECKPOINT_BYTES = 64 * KIB  # a note: origin, size, root, and a signature line per key
CHECKPOINT_LINES = 1024
TOKEN_BYTES = 64 * KIB  # a bearer token travels in a header, and the header block is capped at 64 KiB
TOOLS_BYTES = 4 * MIB  # a tools/list result, as large as one stdio line
CASES_BYTES = 4 * MIB


class InputTooLarge(OSError):
    """More bytes or lines than the input can hold."""


def read_small(path: Path, max_bytes: int, max_lines: int | None = None, *, what: str = "the file") -> str:
    """``path`` as UTF-8 text; raises :class:`InputTooLarge` past ``max_bytes`` or ``max_lines``, having read at
    most ``max_bytes + 1`` bytes, ``OSError`` or ``UnicodeDecodeError`` as reading it would."""
    with path.open("rb") as handle:
        data = handle.read(max_bytes + 1)
    return _checked(data.decode("utf-8") if len(data) <= max_bytes else None, max_bytes, max_lines, what)


def read_small_stdin(max_bytes: int, *, what: str = "the input") -> str:
    """Standard input as text, at most ``max_bytes`` characters (each at least one byte)."""
    text = sys.stdin.read(max_bytes + 1)
    return _checked(text if len(text) <= max_bytes else None, max_bytes, None, what)


def _checked(text: str | None, max_bytes: int, max_lines: int | None, what: str) -> str:
    # The message names no source: every caller says which file it could not read.
    if text is None:
        raise InputTooLarge(f"larger than {max_bytes:,} bytes, more than {what} can be")
    if max_lines is not None and text.count("\n") > max_lines:
        raise InputTooLarge(f"more than {max_lines:,} lines, more than {what} can have")
    return text
