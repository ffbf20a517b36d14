"""``deputy policy validate | schema | test``: output and exit codes (0 ok, 1 invalid/failed, 2 unusable input)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from deputy.cli import app
from tests.support.demo_policies import DEMO_POLICIES


@pytest.fixture
def tools_file(tmp_path: Path, demo_tools: list[dict[str, Any]]) -> Path:
    path = tmp_path / "tools.json"
    path.write_text(json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"tools": demo_tools}}))
    return path


def run(*args: str) -> Any:
    return CliRunner().invoke(app, ["policy", *args])


def test_validate_accepts_the_demo_policies(tools_file: Path) -> None:
    result = run("validate", "--tools", str(tools_file), "--policies", str(DEMO_POLICIES))
    assert result.exit_code == 0, result.output
    assert "6 policies in 2 file(s) are valid" in result.output


def test_validate_names_file_line_column_and_exits_1(tools_file: Path, tmp_path: Path) -> None:
    policies = tmp_path / "policies"
    shutil.copytree(DEMO_POLICIES, policies)
    with (policies / "tools.cedar").open("a") as file:
        file.write('\n@id("oops")\nforbid (principal, action == Deputy::Action::"add", resource)\n'
                   "  when { context.input.c > 1 };\n")
    lines = len((policies / "tools.cedar").read_text().splitlines())
    result = run("validate", "--tools", str(tools_file), "--policies", str(policies))
    assert result.exit_code == 1
    assert f"tools.cedar:{lines}:{len('  when { context.input.') + 1}: policy 'oops'" in result.output


def test_unusable_tools_exit_2(tmp_path: Path) -> None:
    assert run("validate", "--tools", str(tmp_path / "absent.json")).exit_code == 2
    (tmp_path / "bad.json").write_text('{"result": {}}')
    assert run("schema", "--tools", str(tmp_path / "bad.json")).exit_code == 2


def test_schema_prints_the_cedar_schema(tools_file: Path) -> None:
    result = run("schema", "--tools", str(tools_file))
    assert result.exit_code == 0
    assert 'action "delete_user" in [Action::"tools/call"]' in result.output
    as_json = run("schema", "--tools", str(tools_file), "--json")
    assert json.loads(as_json.output)["Deputy"]["actions"]["delete_user"]


CASES = """
[defaults]
user = "alice"
scopes = ["demo:tools"]

[[case]]
name = "echo"
tool = "echo"
arguments = { text = "hi" }
expect = "allow"
policies = ["demo-tools"]

[[case]]
name = "protected id"
tool = "delete_user"
arguments = { id = 7, reason = "x" }
approved = true
expect = "deny"

[[case]]
name = "three agents"
tool = "echo"
arguments = { text = "hi" }
actors = [{ sub = "c" }, { sub = "b" }, { sub = "a" }]
expect = "deny"
policies = ["demo-at-most-two-agents"]

[[case]]
name = "readme"
method = "resources/read"
uri = "demo://readme"
expect = "allow"
"""


def test_test_runs_the_cases(tools_file: Path, tmp_path: Path) -> None:
    cases = tmp_path / "cases.toml"
    cases.write_text(CASES)
    result = run("test", str(cases), "--tools", str(tools_file), "--policies", str(DEMO_POLICIES))
    assert result.exit_code == 0, result.output
    assert "4 passed, 0 failed" in result.output


def test_a_failing_case_exits_1(tools_file: Path, tmp_path: Path) -> None:
    cases = tmp_path / "cases.toml"
    before = 'expect = "deny"\n\n[[case]]\nname = "three'
    cases.write_text(CASES.replace(before, before.replace("deny", "allow")))
    result = run("test", str(cases), "--tools", str(tools_file), "--policies", str(DEMO_POLICIES))
    assert result.exit_code == 1
    assert "3 passed, 1 failed" in result.output


def test_a_malformed_case_file_exits_2(tools_file: Path, tmp_path: Path) -> None:
    cases = tmp_path / "cases.toml"
    cases.write_text('[[case]]\nname = "no target"\nexpect = "allow"\n')
    assert run("test", str(cases), "--tools", str(tools_file), "--policies", str(DEMO_POLICIES)).exit_code == 2
