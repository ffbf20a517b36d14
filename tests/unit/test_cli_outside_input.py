"""CLI commands given outside input: deeply nested JSON or TOML is refused with the command's own error, never a
RecursionError traceback, and a file past what its kind can hold is refused having read at most the bound
(issue 12, second review: token inspect, audit check-proof, audit verify --file, policy test).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from deputy.audit.bundle import MAX_PROOF_LINES, BundleError, parse_bundle
from deputy.cli import app
from deputy.cli.small_input import PROOF_BYTES, InputTooLarge, read_small
from tests.support.audit_build import VKEY
from tests.support.demo_policies import DEMO_POLICIES

DEEP = "[" * 5000 + "]" * 5000
CASE = "[[case]]\ntool = \"echo\"\nexpect = \"allow\"\n"


def run(*args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(app, list(args), input=stdin)


def refused(result: Result, code: int, words: str) -> None:
    """Exit ``code`` with ``words`` in the output, and no exception escaped the command."""
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == code, result.output
    assert words in " ".join(result.output.split()), result.output


def _segment(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize("where", ["header", "payload"])
def test_token_inspect_refuses_a_deeply_nested_token(where: str) -> None:
    """Issue 12: the header and payload went to json.loads unbounded (RecursionError)."""
    deep, flat = _segment('{"alg":' + DEEP + "}"), _segment('{"alg":"ES256"}')
    token = f"{deep}.{flat}.c2ln" if where == "header" else f"{flat}.{deep}.c2ln"
    refused(run("token", "inspect", token), 1, f"the {where} is not base64url-encoded JSON")


def test_token_inspect_reads_at_most_a_bounded_token_from_stdin() -> None:
    refused(run("token", "inspect", "-", stdin="a" * (100 * 1024)), 1, "more than an access token can be")


def _proof(record: bytes, proof_lines: int = 0) -> str:
    lines = ["c2sp.org/tlog-proof@v1", "extra " + base64.b64encode(record).decode(), "index 0"]
    lines += [base64.b64encode(b"\0" * 32).decode()] * proof_lines
    return "\n".join(lines) + "\n\nexample.com/log\n1\n" + base64.b64encode(b"\0" * 32).decode() + "\n\n"


def test_check_proof_refuses_a_deeply_nested_record(tmp_path: Path) -> None:
    """Issue 12: the record in the proof's extra line went to json.loads unbounded (RecursionError)."""
    proof = tmp_path / "deep.tlog-proof"
    proof.write_text(_proof(('{"v":1,"x":' + DEEP + "}").encode()))
    refused(run("audit", "check-proof", str(proof), "--key", VKEY), 1, "JSON nested deeper than")


def test_check_proof_refuses_millions_of_lines_before_reading_them_all(tmp_path: Path) -> None:
    """Issue 12: check-proof read 2 M lines (670 MB) before refusing more than 63 proof lines."""
    proof = tmp_path / "long.tlog-proof"
    proof.write_text(_proof(b'{"v":1}', proof_lines=100_000))
    refused(run("audit", "check-proof", str(proof), "--key", VKEY), 2, "more than a tlog-proof can have")
    proof.write_bytes(b"x" * (PROOF_BYTES + 1))
    refused(run("audit", "check-proof", str(proof), "--key", VKEY), 2, "more than a tlog-proof can be")


def test_a_proof_with_too_many_lines_is_refused_before_any_line_is_decoded() -> None:
    """Issue 12: parse_bundle decoded every proof line before counting them (a bounded file still holds
    thousands); now the count comes first."""
    text = _proof(b'{"v":1}').replace("index 0\n", "index 0\n" + "not base64!\n" * (MAX_PROOF_LINES + 1))
    with pytest.raises(BundleError, match="too many inclusion proof lines"):
        parse_bundle(text)


def test_a_reader_takes_at_most_its_bound(tmp_path: Path) -> None:
    """An endless file is refused after max_bytes + 1 bytes: the read never waits for its end."""
    with pytest.raises(InputTooLarge, match="larger than 1,000 bytes"):
        read_small(Path("/dev/zero"), 1000)
    lines = tmp_path / "lines"
    lines.write_text("\n" * 11)
    with pytest.raises(InputTooLarge, match="more than 10 lines"):
        read_small(lines, 1000, 10)
    assert read_small(lines, 11, 11) == "\n" * 11


@pytest.mark.parametrize("first_line", [
    pytest.param(DEEP, id="header"),
    pytest.param(json.dumps({"format": "deputy-audit-export/v1", "origin": "x", "size": 1}) + "\n" + DEEP,
                 id="a line after it"),
])
def test_audit_verify_file_refuses_a_deeply_nested_line(tmp_path: Path, first_line: str) -> None:
    """Issue 12: the export's header and its non-leaf lines went to json.loads unbounded (RecursionError)."""
    export = tmp_path / "deep.jsonl"
    export.write_text(first_line + "\n")
    result = run("audit", "verify", "--file", str(export), "--key", VKEY)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code != 0 and "Traceback" not in result.output


@pytest.fixture
def tools_file(tmp_path: Path, demo_tools: list[dict[str, Any]]) -> Path:
    path = tmp_path / "tools.json"
    path.write_text(json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"tools": demo_tools}}))
    return path


def _policy_test(cases: Path, tools: Path) -> Result:
    return run("policy", "test", str(cases), "--tools", str(tools), "--policies", str(DEMO_POLICIES))


@pytest.mark.parametrize("text", [
    pytest.param(CASE + "arguments = " + DEEP + "\n", id="nested arrays"),
    pytest.param(CASE + "arguments = " + "{a = " * 5000 + "1" + "}" * 5000 + "\n", id="inline tables"),
    pytest.param(CASE + "arguments." + ".".join(["a"] * 5000) + " = 1\n", id="dotted keys"),
])
def test_policy_test_refuses_deeply_nested_cases(tools_file: Path, tmp_path: Path, text: str) -> None:
    """Issue 12: tomllib recursed on nested arrays and inline tables (RecursionError); dotted keys built
    arguments nested 5000 deep for the policy engine to recurse on."""
    cases = tmp_path / "cases.toml"
    cases.write_text(text)
    refused(_policy_test(cases, tools_file), 2, "TOML nested deeper than")


def test_policy_test_refuses_a_deeply_nested_tools_file(tmp_path: Path) -> None:
    tools = tmp_path / "tools.json"
    tools.write_text('{"tools": ' + DEEP + "}")
    cases = tmp_path / "cases.toml"
    cases.write_text('[[case]]\ntool = "echo"\nexpect = "allow"\n')
    refused(_policy_test(cases, tools), 2, "JSON nested deeper than")


def test_policy_test_refuses_a_cases_file_larger_than_it_can_be(tools_file: Path, tmp_path: Path) -> None:
    cases = tmp_path / "cases.toml"
    cases.write_text("# padding\n" * 500_000)
    refused(_policy_test(cases, tools_file), 2, "more than a file of test cases can be")
