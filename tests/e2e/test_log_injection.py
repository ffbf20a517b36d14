"""What a client or an upstream writes cannot split, forge or hide a line of Deputy's text log (issue 13).

A real ``deputy serve`` logging text at info: a client calls a tool whose name holds a line feed, a forged log
line, a carriage return and terminal controls (clear screen, an OSC 52 clipboard write, a bidi override); a stdio
server writes the same to its stderr, and a 5 MiB line. Every line of the log is then one of Deputy's own
records — a timestamp, a level, a logger, a quoted message — with no control character in it.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.deputy_process import RunningDeputy
from tests.support.logging_deputy import logging_deputy, stopped_log
from tests.support.oauth_flow import mcp_post, tokens_for_alice

FLOOD_SERVER = str(Path(__file__).with_name("stderr_flood_stdio_server.py"))
FORGED_LINE = '2026-01-01T00:00:00.000Z INFO deputy.oauth "token issued to mallory"'
FORGED_TOOL = f"add\n{FORGED_LINE} outcome=allowed\r\x1b[2J\x1b]52;c;ZXZpbA==\x07\u202e\x7f"
RECORD = re.compile(r'\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR|CRITICAL) [\w.]+ "')


@pytest.fixture
def text_deputy(upstream_url: str, tmp_path: Path) -> Iterator[RunningDeputy]:
    extra = f'\n[servers.flood]\ncommand = {json.dumps([sys.executable, FLOOD_SERVER])}\nscopes = ["flood:tools"]\n'
    with logging_deputy(tmp_path, upstream_url, extra, level="info", log_format="text") as deputy:
        yield deputy


async def _session(deputy: RunningDeputy, token: str, server: str) -> dict[str, str]:
    opened = await mcp_post(deputy, token, server=server)
    assert opened.status_code == 200, opened.text
    session = {"Mcp-Session-Id": opened.headers["mcp-session-id"]}
    assert (await mcp_post(deputy, token, server=server, headers=session,
                           body={"jsonrpc": "2.0", "method": "notifications/initialized"})).status_code == 202
    return session


def _call(tool: str) -> dict[str, object]:
    return {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": tool, "arguments": {}}}


async def test_no_tool_name_or_stderr_line_splits_forges_or_hides_a_log_line(text_deputy: RunningDeputy) -> None:
    """Issue 13: the text format escaped only CR and LF, and a value with a space could pass for more fields."""
    deputy = text_deputy
    token, _ = await tokens_for_alice(deputy)
    forged = await mcp_post(deputy, token, headers=await _session(deputy, token, "demo"), body=_call(FORGED_TOOL))
    assert forged.status_code == 200
    token, _ = await tokens_for_alice(deputy, deputy.resource("flood"))
    flooded = await mcp_post(deputy, token, server="flood", headers=await _session(deputy, token, "flood"),
                             body=_call("flood"))
    assert flooded.status_code == 200 and "flooded" in flooded.text

    lines = stopped_log(deputy)
    for line in lines:
        assert RECORD.match(line), line[:300]
        assert line.isprintable(), line[:300]
        assert len(line) < 4096, "a stderr line is logged bounded"
    assert not [line for line in lines if FORGED_LINE in line and "\\n" + FORGED_LINE not in line
                and "\\r" + FORGED_LINE[25:] not in line]
    stderr = [line for line in lines if " deputy.upstream.stderr " in line and line.endswith(" server=flood")]
    # The relay shows the server's controls as escapes (deputy.gateway.stdio_stderr); the text line escapes those.
    assert any('"\\\\x1b[2J\\\\rINFO deputy.oauth: token issued to mallory"' in line for line in stderr), stderr[-3:]
    assert any(f'"{"L" * 1024} … {5 * 1024 * 1024 - 1024} bytes dropped"' in line for line in stderr)
    requests = [line for line in lines if " deputy.requests " in line and " method=tools/call" in line]
    tool = ' tool="add\\n2026-01-01T00:00:00.000Z INFO deputy.oauth \\"token issued to mallory\\" outcome=allowed' \
           '\\r\\x1b[2J\\x1b]52;c;ZXZpbA==\\x07\\u202e\\x7f"'
    assert any(tool in line for line in requests), requests
