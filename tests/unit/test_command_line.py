"""Commands Deputy tells an operator to run (:func:`deputy.display_text.command_line`): pasted into a POSIX shell,
each outside word stays one argument and nothing in it is expanded, substituted or run (review of 2026-12-06: the
"Waiting for approval" page printed a client id raw in ``deputy clients approve``)."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deputy.display_text import command_line

HOSTILE = [
    "https://evil.example/app$(touch$IFS'pwned').json",
    "https://evil.example/app;touch pwned;.json",
    "https://evil.example/a`touch pwned`b",
    "https://evil.example/a'$(touch pwned)'b",
    'https://evil.example/a"$(touch pwned)"b',
    "https://evil.example/a|touch pwned",
    "https://evil.example/a&&touch pwned",
    "https://evil.example/a\ntouch pwned",
    "https://evil.example/${IFS}*?[a]~{x,y}#!",
    "-rf",
    "",
]


@pytest.mark.parametrize(("words", "line"), [
    (("deputy", "clients", "approve", "test-public"), "deputy clients approve test-public"),
    (("deputy", "clients", "approve", "https://app.example/client.json"),
     "deputy clients approve https://app.example/client.json"),
    (("deputy", "clients", "approve", "https://e.example/a$(x)"), "deputy clients approve 'https://e.example/a$(x)'"),
    (("deputy", "clients", "approve", "a'b"), "deputy clients approve 'a'\"'\"'b'"),
])
def test_known_answers(words: tuple[str, ...], line: str) -> None:
    assert command_line(*words) == line


@given(st.lists(st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"])), max_size=6))
def test_a_shell_splits_the_line_back_into_the_words(words: list[str]) -> None:
    assert shlex.split(command_line("deputy", *words)) == ["deputy", *words]


@pytest.mark.parametrize("word", HOSTILE)
def test_bash_runs_the_command_with_the_word_as_one_argument_and_nothing_else(word: str, tmp_path: Path) -> None:
    if shutil.which("bash") is None:
        pytest.skip("bash is needed to run the command as an administrator's shell would")
    script = 'deputy() { printf "%s\\0" "$@" > arguments; }\n' + command_line("deputy", "clients", "approve", word)
    subprocess.run(["bash", "--noprofile", "--norc", "-c", script], cwd=tmp_path, check=True, timeout=10)
    assert not (tmp_path / "pwned").exists()
    assert (tmp_path / "arguments").read_bytes().split(b"\0")[:-1] == [b"clients", b"approve", word.encode()]
