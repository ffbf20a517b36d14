"""Issue 12, operator terminals: what others chose reaches the operator's terminal shown, never obeyed.

A client's name and metadata document, an agent's tool name and arguments, an audit record's fields are
written into the database by the tests as an attacker would get them there, then the real commands print
them: nothing in their output may act on a terminal (ESC sequences such as OSC 52 clipboard writes and
``ESC [ 2 J``, BEL, CR, BS, C1 controls, bidi overrides, zero-width characters), nothing may be read as
Rich markup (``x[/]`` made ``deputy approvals list`` exit 1 for good; ``[conceal]`` hid text), and every
character stays visible as an escape. The output is the backend's data printed, so SQLite serves.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from deputy.cli import app
from deputy.cli.common import console, err
from deputy.config import load_settings
from deputy.services import Services
from deputy.storage.approvals import Approval
from tests.support.config_files import offline_config

OSC52 = "\x1b]52;c;aGVsbG8=\x07"
CLEAR = "\x1b[2J"
RLO = "\u202e"
# Every piece a terminal would obey, or that would hide text, and markup that Rich would parse.
HOSTILE = f"x[/][conceal]secret[/conceal]{OSC52}{CLEAR}{RLO}gnp.exe\x9b\r\b\u200b\u2066:warning:"
ACTING = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2060-\u2069\ufeff]")


def assert_shown(output: str) -> None:
    """Nothing in ``output`` acts on a terminal, and the hostile text is all there to read."""
    assert not ACTING.search(output), repr(ACTING.findall(output))
    assert "secret" in output and "x[/]" in output and "[conceal]" in output  # never markup
    assert "\\x1b]52;c;aGVsbG8=\\x07" in output and "\\x1b[2J" in output and "\\u202e" in output
    assert ":warning:" in output  # never an emoji


@pytest.fixture(autouse=True)
def wide_consoles(monkeypatch: pytest.MonkeyPatch) -> None:
    """Wide enough that no cell wraps, so each value is found whole in the output."""
    monkeypatch.setattr(console, "width", 400)
    monkeypatch.setattr(err, "width", 400)


class Planted:
    def __init__(self, config: Path, approval: Approval, decision_id: str) -> None:
        self.config = config
        self.approval = approval
        self.decision_id = decision_id

    def cli(self, *args: str) -> Result:
        return CliRunner().invoke(app, [*args, "--config", str(self.config)])


@pytest.fixture
def planted(tmp_path: Path) -> Iterator[Planted]:
    config = offline_config(tmp_path)
    settings = load_settings(config, environ={})

    async def plant() -> tuple[Approval, str]:
        services = Services.open(settings)
        try:
            await services.start()
            await services.users.add("alice", "alice's long passphrase")
            requester = await services.users.add("bob", "bob's long passphrase")
            await services.clients.put(
                client_id="hostile", client_name=HOSTILE, redirect_uris=[f"http://127.0.0.1/cb?{HOSTILE}"],
                token_endpoint_auth_method="none", source="document",
                client_metadata={"client_uri": HOSTILE, HOSTILE: [HOSTILE]})
            await services.consents.grant(requester.user_id, f"hostile{HOSTILE}", settings.resource_of("demo"),
                                          {"demo:tools"})
            approval = await services.approvals.create(
                server="demo", tool=HOSTILE, arguments={"r": "x[/][conceal]secret[/conceal]", "s": HOSTILE},
                user_id=requester.user_id, agent=HOSTILE, actors=[{"sub": HOSTILE}])
            decision_id = "d" * 32
            await services.record(
                "decision", user=requester.user_id, agent=HOSTILE, actors=[{"client_id": HOSTILE}], txn=HOSTILE,
                jti=HOSTILE, server="demo", decision_id=decision_id, outcome="deny", method="tools/call",
                tool=HOSTILE, policies=[HOSTILE], policy_version=None, schema_version=None, errors=[HOSTILE],
                approval_id=HOSTILE, arguments={"s": HOSTILE})
            return approval, decision_id
        finally:
            await services.close()

    approval, decision_id = asyncio.run(plant())
    yield Planted(config, approval, decision_id)


def test_clients_list_and_show_show_a_hostile_name(planted: Planted) -> None:
    """Issue 12: a client's name and metadata document reach `clients list/show` as escapes, never as controls."""
    listed = planted.cli("clients", "list")
    assert listed.exit_code == 0, listed.output
    assert_shown(listed.output)
    shown = planted.cli("clients", "show", "hostile")
    assert shown.exit_code == 0, shown.output
    assert_shown(shown.output)
    assert shown.output.count("secret") >= 4  # name, redirect URI, client_uri, and the document's own key


def test_approvals_list_and_decide_show_hostile_arguments(planted: Planted) -> None:
    """Issue 12: arguments like ``x[/]`` made `approvals list` exit 1 for good and ``[conceal]`` hid text."""
    listed = planted.cli("approvals", "list")
    assert listed.exit_code == 0, listed.output
    assert_shown(listed.output)
    assert planted.approval.approval_id in listed.output
    decided = planted.cli("approvals", "deny", planted.approval.approval_id, "--as", "alice")
    assert decided.exit_code == 0, decided.output
    assert_shown(decided.output)


def test_audit_tail_shows_hostile_records(planted: Planted) -> None:
    """Issue 12: tool names, agents and users in `audit tail` lines come from agents: shown, never obeyed."""
    tailed = planted.cli("audit", "tail")
    assert tailed.exit_code == 0, tailed.output
    assert tailed.output.count("\\u202e") >= 2  # the decision's agent and tool
    assert not ACTING.search(tailed.output), repr(ACTING.findall(tailed.output))
    assert "x[/][conceal]secret[/conceal]" in tailed.output


def test_policy_explain_shows_a_hostile_decision(planted: Planted) -> None:
    """Issue 12: every field `policy explain` prints from a decision record is shown, never obeyed."""
    explained = planted.cli("policy", "explain", planted.decision_id)
    assert explained.exit_code == 0, explained.output
    assert_shown(explained.output)


def test_consents_list_shows_a_hostile_client_id(planted: Planted) -> None:
    """Issue 12: a client id is chosen by whoever hosts its metadata document."""
    listed = planted.cli("consents", "list")
    assert listed.exit_code == 0, listed.output
    assert_shown(listed.output)


def test_check_proof_shows_a_hostile_record(planted: Planted, tmp_path: Path) -> None:
    """Issue 12: a proof file is outside text; the record and origin it carries are shown, never obeyed."""
    proved = planted.cli("audit", "prove", "0")  # the decision, the only record
    assert proved.exit_code == 0, proved.output
    proof = tmp_path / "record.tlog-proof"
    proof.write_text(proved.output)
    key = planted.cli("audit", "key").output.strip()
    checked = CliRunner().invoke(app, ["audit", "check-proof", str(proof), "--key", key])
    assert checked.exit_code == 0, checked.output
    assert "proof OK" in checked.output
    assert not ACTING.search(checked.output), repr(ACTING.findall(checked.output))
    assert json.dumps("x[/]")[1:-1] in checked.output


def test_policy_schema_json_shows_a_hostile_tool_name(tmp_path: Path) -> None:
    """Issue 12: an upstream's tool names and descriptions reached the terminal raw in `policy schema --json`;
    now they are JSON escapes, and the printed JSON is still the schema's exact value."""
    name = f"evil{RLO}gnp\x1b[2J\x9b"
    tools = tmp_path / "tools.json"
    tools.write_text(json.dumps({"jsonrpc": "2.0", "id": 1, "result": {"tools": [{
        "name": name, "description": HOSTILE,
        "inputSchema": {"type": "object", "properties": {f"a{RLO}b": {"type": "string", "description": HOSTILE}}}}]}}))
    for args in (["--json"], []):
        printed = CliRunner().invoke(app, ["policy", "schema", "--tools", str(tools), *args])
        assert printed.exit_code == 0, printed.output
        assert not ACTING.search(printed.output), repr(ACTING.findall(printed.output))
    printed = CliRunner().invoke(app, ["policy", "schema", "--tools", str(tools), "--json"])
    assert name in json.loads(printed.output)["Deputy"]["actions"]

