"""``deputy policy test`` cases set the user's attributes (``context.user``): groups, e-mail, name, idp, claims;
``deputy policy validate`` types the configured extra claims (issue 14, item 4)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from deputy.cli import app
from tests.support.demo_policies import DEMO_POLICIES

CASES = """
[defaults]
scopes = ["demo:tools"]
tool = "delete_user"
arguments = { id = 500, reason = "x" }

[[case]]
name = "an admin from the identity provider: approval, as for everyone"
idp = "corp"
groups = ["admins", "finance"]
email = "ada@example.com"
expect = "approval_required"

[[case]]
name = "not an admin"
idp = "corp"
groups = ["finance"]
expect = "deny"
policies = ["demo-idp-delete-needs-admins"]

[[case]]
name = "a local user (the default idp), no groups"
expect = "approval_required"
"""


@pytest.fixture
def tools_file(tmp_path: Path, demo_tools: list[dict[str, Any]]) -> Path:
    path = tmp_path / "tools.json"
    path.write_text(json.dumps({"tools": demo_tools}))
    return path


def run(*args: str) -> Any:
    return CliRunner().invoke(app, ["policy", *args])


def test_cases_set_groups_and_the_group_rule_decides(tools_file: Path, tmp_path: Path) -> None:
    (tmp_path / "cases.toml").write_text(CASES)
    result = run("test", str(tmp_path / "cases.toml"), "--tools", str(tools_file), "--policies", str(DEMO_POLICIES))
    assert result.exit_code == 0, result.output
    assert "3 passed, 0 failed" in result.output


@pytest.mark.parametrize("bad", ['groups = "admins"', "groups = [1]", 'claims = { level = 3 }', "email = 7"])
def test_a_malformed_user_in_a_case_is_unusable_input(tools_file: Path, tmp_path: Path, bad: str) -> None:
    (tmp_path / "cases.toml").write_text(f'[[case]]\ntool = "echo"\nexpect = "deny"\n{bad}\n')
    result = run("test", str(tmp_path / "cases.toml"), "--tools", str(tools_file), "--policies", str(DEMO_POLICIES))
    assert result.exit_code == 2, result.output


def test_a_configured_extra_claim_is_typed_and_a_typo_refused(tools_file: Path, tmp_path: Path) -> None:
    config = tmp_path / "deputy.toml"
    config.write_text('''public_url = "http://127.0.0.1:8000"
local_users = true

[servers.demo]
url = "http://127.0.0.1:9/mcp"
scopes = ["demo:tools"]

[[identity_providers]]
name = "corp"
issuer = "http://127.0.0.1:9"
client_id = "deputy"
client_secret = "s3cret-s3cret-s3cret"
extra_claims = ["department"]
''')
    policies = tmp_path / "policies"
    policies.mkdir()
    rule = ('permit (principal, action == Deputy::Action::"echo", resource) when {{ context.user.claims has {0} '
            '&& context.user.claims.{0} == "treasury" }};')
    (policies / "p.cedar").write_text(rule.format("department"))
    cases = tmp_path / "cases.toml"
    cases.write_text('[[case]]\ntool = "echo"\narguments = { text = "x" }\nclaims = { department = "treasury" }\n'
                     'expect = "allow"\n')
    args = ("--tools", str(tools_file), "--policies", str(policies), "--config", str(config))
    assert run("validate", *args).exit_code == 0
    result = run("test", str(cases), *args)
    assert result.exit_code == 0, result.output
    assert run("validate", "--tools", str(tools_file), "--policies", str(policies)).exit_code == 1  # not configured
    (policies / "p.cedar").write_text(rule.format("departmnet"))
    assert run("validate", *args).exit_code == 1
