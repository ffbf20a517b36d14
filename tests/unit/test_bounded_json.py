"""Outside JSON and TOML: nesting bounded before the recursive parser runs (issue 12, second review).

``json.loads`` and ``tomllib.loads`` recurse once per level; ``"[" * 100_000`` raised ``RecursionError`` in every
caller that parsed outside text (CLI commands, registration, client documents, JOSE, upstream answers).
"""

from __future__ import annotations

import base64
import json
import tomllib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from deputy.bounded_json import (
    MAX_DEPTH,
    TomlTooDeep,
    TooDeep,
    check_depth,
    check_jws_depth,
    loads,
    loads_toml,
    value_within_depth,
)

ABUSE = [
    pytest.param("[" * 100_000 + "]" * 100_000, id="arrays"),
    pytest.param('{"a":' * 50_000 + "1" + "}" * 50_000, id="objects"),
    pytest.param("[" * 100_000, id="unterminated"),
    pytest.param('["x]]]", ' + "[" * 5000 + "]" * 5000 + "]", id="after a string"),
    pytest.param(("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1)).encode(), id="bytes, one level too deep"),
    pytest.param(("[" * 5000).encode("utf-16-le"), id="UTF-16 bytes"),
]


@pytest.mark.parametrize("text", ABUSE)
def test_deep_json_is_refused_before_parsing(text: str | bytes) -> None:
    """Issue 12: json.loads raised RecursionError on these; now TooDeep, a JSONDecodeError (so a ValueError)."""
    with pytest.raises(TooDeep) as refused:
        loads(text)
    assert isinstance(refused.value, json.JSONDecodeError) and isinstance(refused.value, ValueError)
    assert refused.value.msg == f"JSON nested deeper than {MAX_DEPTH} levels"


def test_brackets_inside_strings_do_not_count() -> None:
    text = json.dumps({"a": "[" * 10_000, "b": ["{" * 10_000, '\\"[[[', {"c": "]]]" * 100}]})
    assert loads(text)["a"] == "[" * 10_000


def test_exactly_the_limit_parses_and_one_more_is_refused() -> None:
    assert loads("[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None
    with pytest.raises(TooDeep):
        check_depth("[" * 3 + "]" * 3, 2)
    check_depth("[[]]", 2)


def test_an_unterminated_string_is_scanned_once() -> None:
    """A scan that restarted at every quote of an unterminated string would be quadratic (a 64 KiB body:
    billions of steps); the string runs to the end instead, and json.loads refuses the text as before."""
    text = "[" * (MAX_DEPTH + 1) + '"' + '\\"' * 200_000
    with pytest.raises(ValueError):
        loads(text)
    with pytest.raises(json.JSONDecodeError):
        loads('"' + '\\"' * 200_000)


def test_options_reach_json_loads() -> None:
    def refuse(pairs: list[tuple[str, object]]) -> dict[str, object]:
        raise ValueError("hook ran")

    with pytest.raises(ValueError, match="hook ran"):
        loads('{"a": 1}', object_pairs_hook=refuse)


@given(st.recursive(st.none() | st.integers() | st.text(), lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=3), inner, max_size=3), max_leaves=30))
def test_the_scan_agrees_with_the_parsed_depth(value: object) -> None:
    text = json.dumps(value)
    depth = 0
    while not value_within_depth(value, depth):
        depth += 1
    check_depth(text, depth)
    if depth:
        with pytest.raises(TooDeep):
            check_depth(text, depth - 1)


TOML_ABUSE = [
    pytest.param("a = " + "[" * 10_000 + "]" * 10_000, id="arrays"),
    pytest.param("a = " + "{b = " * 10_000 + "1" + "}" * 10_000, id="inline tables"),
    pytest.param("a = " + "[" * 10_000, id="unterminated"),
    pytest.param("a" + ".b" * 10_000 + " = 1", id="dotted keys"),
    pytest.param("[" + ".".join(["t"] * 10_000) + "]\nx = 1", id="table header"),
]


@pytest.mark.parametrize("text", TOML_ABUSE)
def test_deep_toml_is_refused(text: str) -> None:
    """Issue 12: tomllib raised RecursionError on arrays and inline tables; dotted keys built a value nested so
    deep that whatever read it recursed. Now TomlTooDeep, a TOMLDecodeError."""
    with pytest.raises(TomlTooDeep) as refused:
        loads_toml(text)
    assert isinstance(refused.value, tomllib.TOMLDecodeError)


def test_toml_strings_and_comments_do_not_count() -> None:
    text = ('a = "' + "[" * 500 + '"\n'
            "b = '" + "{" * 500 + "'\n"
            'c = """\n' + "[" * 500 + '\n"""\n'
            "d = '''" + "[" * 500 + "'''\n"
            "# " + "[" * 500 + "\n"
            'e = """x"""""\n'
            "[[case]]\nf = [[1], [2]]\n")
    document = loads_toml(text)
    assert document["a"] == "[" * 500 and document["e"] == 'x""' and document["case"] == [{"f": [[1], [2]]}]


def _segment(value: str) -> str:
    return base64.urlsafe_b64encode(value.encode()).decode().rstrip("=")


def test_a_jws_nested_too_deeply_is_refused_before_the_jose_library() -> None:
    """Issue 12: joserfc parses a compact JWS's header (and, once verified, payload) with json.loads."""
    deep = "[" * 5000 + "]" * 5000
    with pytest.raises(TooDeep):
        check_jws_depth(f"{_segment(deep)}.{_segment('{}')}.sig")
    with pytest.raises(TooDeep):
        check_jws_depth(f"{_segment('{}')}.{_segment(deep)}.sig")
    check_jws_depth(f"{_segment('{}')}.{_segment('{}')}.sig")
    check_jws_depth("not base64!.%%%.x")  # left for the library to refuse
