"""PolicyFile.position (deputy.policy.sources): line and column of an offset, from line starts found once per file."""

from __future__ import annotations

import pytest

from deputy.policy.sources import PolicyFile, parse_policy_files


def test_line_starts_are_found_once_when_the_file_is_made() -> None:
    # Regression: position() used to rescan the whole text on every call (quadratic load of a large file).
    assert PolicyFile("a.cedar", "ab\ncd\n\nef").line_starts == (0, 3, 6, 7)


@pytest.mark.parametrize(("text", "offset", "expected"), [
    ("abc\ndef\n", 0, (1, 1)),          # first character of the first line
    ("abc\ndef\n", 2, (1, 3)),
    ("abc\ndef\n", 3, (1, 4)),          # the newline itself belongs to its line
    ("abc\ndef\n", 4, (2, 1)),          # first character of the last line
    ("abc\ndef\n", 6, (2, 3)),
    ("abc\ndef\n", 8, (3, 1)),          # end of a file with a final newline: an empty last line
    ("abc\ndef", 7, (2, 4)),            # end of a file without a final newline
    ("abc\ndef", 6, (2, 3)),
    ("ab\r\ncd\r\n", 4, (2, 1)),        # CRLF: a line starts after the \n
    ("ab\r\ncd\r\n", 2, (1, 3)),        # the \r is a column of its line
    ("ab\r\ncd", 5, (2, 2)),
    ("", 0, (1, 1)),
    ("\n\n\n", 3, (4, 1)),
])
def test_position(text: str, offset: int, expected: tuple[int, int]) -> None:
    assert PolicyFile("a.cedar", text).position(offset) == expected


def test_policy_positions_in_a_crlf_file_without_final_newline() -> None:
    text = ('permit (principal, action, resource);\r\n\r\n'
            '  @id("second")\r\n  forbid (principal, action, resource);')
    first, second = parse_policy_files([PolicyFile("p.cedar", text)])
    assert (first.line, first.column) == (1, 1)
    assert (second.policy_id, second.line, second.column) == ("second", 3, 3)


def test_problem_on_the_last_line_names_it() -> None:
    file = PolicyFile("p.cedar", "a\nb\nccc")
    problem = file.problem(len(file.text), "end")
    assert (problem.line, problem.column, str(problem)) == (3, 4, "p.cedar:3:4: end")
