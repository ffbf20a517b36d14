"""Issue 13, through a running Deputy with the MCP Python SDK client: a call refused because its arguments do not
fit the tool's schema says which argument and why — in the JSON-RPC error's ``data`` the SDK raises, and in the
audit record ``deputy policy explain`` prints — never quoting the value.

The upstream is ``booking_stdio_server.py`` (the official SDK): ``book(room: int, window: Window, note: str)``
with ``Window.start``/``end`` date-times, behind a permit-all policy; arguments are audited as their digest.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from tests.support.audit_log import read_log
from tests.support.databases import database_url
from tests.support.deputy_process import RunningDeputy, running_deputy
from tests.support.oauth_flow import tokens_for_alice

SERVER = "booking"
BOOKING_SERVER = str(Path(__file__).with_name("booking_stdio_server.py"))
POLICY_DENIED = -32003
SECRET = "sk-live-e2e-4b1d9a77c3f0"
WINDOW = {"start": "2026-06-01T10:00:00Z", "end": "2026-06-01T11:00:00+01:00"}


@pytest.fixture(scope="module")
def booking(backend: str, upstream_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDeputy]:
    directory = tmp_path_factory.mktemp(f"deputy-booking-{backend}")
    (directory / "booking-policies").mkdir()
    (directory / "booking-policies" / "booking.cedar").write_text('@id("booking-all") permit (principal, action, '
                                                                  'resource);\n')
    extra = (f"\n[servers.{SERVER}]\ncommand = {json.dumps([sys.executable, BOOKING_SERVER])}\n"
             f'scopes = ["{SERVER}:tools"]\npolicies = "booking-policies"\n'
             '\n[audit]\narguments = "digest"\n')
    with database_url(backend, directory) as url, running_deputy(directory, url, upstream_url, extra) as deputy:
        yield deputy


@pytest.fixture(scope="module")
async def token(booking: RunningDeputy) -> str:
    access, _ = await tokens_for_alice(booking, booking.resource(SERVER))
    return access


async def book(deputy: RunningDeputy, token: str, arguments: dict[str, Any]) -> Any:
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30.0) as http,
        Client(streamable_http_client(deputy.resource(SERVER), http_client=http), mode="legacy") as client,
    ):
        return await client.call_tool("book", arguments)


async def refused(deputy: RunningDeputy, token: str, arguments: dict[str, Any]) -> dict[str, Any]:
    """The ``data`` of the policy denial the SDK client raises for ``book(arguments)``."""
    with pytest.raises((MCPError, ExceptionGroup)) as raised:  # the SDK's task group may wrap it
        await book(deputy, token, arguments)
    denied = raised.value
    while isinstance(denied, ExceptionGroup) and len(denied.exceptions) == 1:
        denied = denied.exceptions[0]
    assert isinstance(denied, MCPError), raised.value
    assert denied.error.code == POLICY_DENIED
    assert denied.error.message == "denied by policy: the arguments do not fit the tool's input schema"
    data = denied.error.data
    assert isinstance(data, dict) and data["outcome"] == "deny" and data["policies"] == []
    assert data["reason"] == "arguments_invalid"
    return data


async def decision_record(deputy: RunningDeputy, decision_id: str) -> tuple[dict[str, Any], bytes]:
    (leaf,) = (await read_log(deputy.database_url)).decisions(decision_id=decision_id)
    return dict(leaf.record), leaf.entry


async def test_many_bad_and_long_named_arguments_are_capped_and_cut(booking: RunningDeputy, token: str) -> None:
    arguments: dict[str, Any] = {"room": 1, "window": WINDOW, "n" * 5000: 1, "bidi\u202eexe": 1,
                                 **{f"extra{i}": i for i in range(500)}}
    data = await refused(booking, token, arguments)
    assert len(data["problems"]) == 10 and data["problems_truncated"] is True
    first, second = data["problems"][:2]
    assert len(first["argument"]) == 128 and first["argument"].startswith("/nnnn") and first["argument"].endswith("…")
    assert second["argument"] == "/bidi\ufffdexe"
    record, _ = await decision_record(booking, data["decision_id"])
    assert len(record["errors"]) == 11 and all(e.startswith("arguments_invalid: ") for e in record["errors"])


async def test_a_secret_in_a_bad_argument_is_in_neither_the_error_nor_the_audit_log(booking: RunningDeputy,
                                                                                    token: str) -> None:
    data = await refused(booking, token, {"room": 1, "window": {"start": SECRET, "end": WINDOW["end"]},
                                          "note": 42})
    assert data["problems"] == [
        {"argument": "/window/start", "problem": "format date-time: not an RFC 3339 date-time "
                                                 "(YYYY-MM-DDThh:mm:ss[.fff] and Z or ±hh:mm)"},
        {"argument": "/note", "problem": "expected a string, got an integer"}]
    assert SECRET not in json.dumps(data)
    record, entry = await decision_record(booking, data["decision_id"])
    assert set(record["arguments"]) == {"sha256"}  # [audit] arguments = "digest"
    assert SECRET.encode() not in entry
    explained = booking.cli("policy", "explain", data["decision_id"])
    assert explained.returncode == 0, explained.stderr
    assert SECRET not in explained.stdout
    text = " ".join(explained.stdout.split())
    assert "arguments_invalid: /window/start does not fit the tool's schema" in text
    assert SECRET not in (booking.data_dir.parent / "deputy.log").read_text(errors="replace")


async def test_a_missing_argument_a_wrong_type_and_a_format_are_named(booking: RunningDeputy, token: str) -> None:
    data = await refused(booking, token, {"window": {"start": "2026-06-01T10:00:00Z", "end": "20260601"}})
    assert data["problems"] == [
        {"argument": "/window/end", "problem": "format date-time: not an RFC 3339 date-time "
                                               "(YYYY-MM-DDThh:mm:ss[.fff] and Z or ±hh:mm)"},
        {"argument": "/room", "problem": "required argument is missing"}]
    assert data["problems_truncated"] is False
    record, _ = await decision_record(booking, data["decision_id"])
    assert record["outcome"] == "deny" and record["policies"] == []
    assert record["errors"] == [
        "arguments_invalid: /window/end does not fit the tool's schema: format date-time: not an RFC 3339 date-time "
        "(YYYY-MM-DDThh:mm:ss[.fff] and Z or ±hh:mm)",
        "arguments_invalid: /room does not fit the tool's schema: required argument is missing"]

    wrong = await refused(booking, token, {"room": "12", "window": WINDOW})
    assert wrong["problems"] == [{"argument": "/room", "problem": "expected an integer, got a string"}]

    booked = await book(booking, token, {"room": 12, "window": WINDOW})
    assert not booked.is_error, booked
    assert "room 12 from 2026-06-01T10:00:00+00:00" in str(booked.content)
