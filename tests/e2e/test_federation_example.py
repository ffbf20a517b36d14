"""README "Identity providers: a local example": ``examples/federation/run.py`` works as documented (issue 14, item 7).

The example is run as a user runs it (its own process, its printed lines read), on a free port. Then, with nothing
but what it printed: Deputy answers an MCP client's ``/authorize`` by sending the browser straight to the OP (one
provider, ``local_users = false``); a headless sign-in at the OP comes back to Deputy's callback and on to the
consent page naming ``alice@example``; the official MCP SDK client signs in the same way and calls a tool; and
SIGTERM stops Deputy and the OP (their ports close).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import httpx
import pytest

from tests.support.oidc_op import ALICE, BOB, require_oidc_provider, sign_in_at_op_async
from tests.support.sdk_client import sdk_oauth_client

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "federation" / "run.py"
READY_TIMEOUT = 90.0
CLIENT_REDIRECT = "http://localhost:9/callback"  # a loopback redirect: admitted by registration's default mode


class RunningExample:
    def __init__(self, process: subprocess.Popen[str], lines: dict[str, str]) -> None:
        self.process = process
        self.issuer = lines["identity provider"].split()[0]
        self.mcp_url = lines["MCP server"]
        self.config = Path(lines["configuration"])
        self.deputy_url = self.mcp_url.removesuffix("/mcp/demo")


def _read_until_ready(process: subprocess.Popen[str], timeout: float) -> dict[str, str]:
    """The example's ``label: value`` lines up to ``ready``, read in a thread so a hung start ends in a timeout."""
    lines: dict[str, str] = {}
    ready = threading.Event()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if line.startswith("ready"):
                ready.set()
                return
            label, _, value = line.partition(": ")
            lines[label] = value.strip()

    threading.Thread(target=read, daemon=True).start()
    if not ready.wait(timeout):
        process.kill()
        raise AssertionError(f"the example printed no ready line (exit code {process.poll()}): {lines}")
    return lines


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningExample]:
    require_oidc_provider()
    work = tmp_path_factory.mktemp("federation-example")
    process = subprocess.Popen([sys.executable, str(EXAMPLE), "--port", "0", "--data-dir", str(work)], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        yield RunningExample(process, _read_until_ready(process, READY_TIMEOUT))
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _authorize_query(client_id: str, resource: str) -> str:
    challenge = base64.urlsafe_b64encode(hashlib.sha256(secrets.token_urlsafe(48).encode()).digest())
    return urlencode({"response_type": "code", "client_id": client_id, "redirect_uri": CLIENT_REDIRECT,
                      "state": "client-state", "code_challenge": challenge.rstrip(b"=").decode(),
                      "code_challenge_method": "S256", "resource": resource, "scope": "demo:tools"})


async def test_authorize_goes_to_the_op_and_back_to_consent(example: RunningExample) -> None:
    config = example.config.read_text()
    assert "local_users = false" in config and "[[identity_providers]]" in config
    async with httpx.AsyncClient(timeout=30) as browser:
        registered = await browser.post(f"{example.deputy_url}/register", json={
            "redirect_uris": [CLIENT_REDIRECT], "token_endpoint_auth_method": "none", "client_name": "example test"})
        assert registered.status_code == 201, registered.text
        query = _authorize_query(registered.json()["client_id"], example.mcp_url)
        sent = await browser.get(f"{example.deputy_url}/authorize?{query}")
        assert sent.status_code == 303, sent.text
        to_op = sent.headers["location"]
        assert to_op.startswith(example.issuer + "/"), to_op
        back = await sign_in_at_op_async(browser, to_op, ALICE.username, ALICE.password)
        assert back.url.startswith(f"{example.deputy_url}/login/callback/example?")
        assert back.params["iss"] == example.issuer  # RFC 9207, as the README says the OP sends
        landed = await browser.get(back.url)
        assert landed.status_code == 303, landed.text
        assert landed.headers["location"].startswith("/authorize/consent?request_id=")
        consent = await browser.get(example.deputy_url + landed.headers["location"])
        assert consent.status_code == 200 and "alice@example" in consent.text


async def test_the_sdk_client_signs_in_and_calls_a_tool(example: RunningExample) -> None:
    async with sdk_oauth_client(example.mcp_url, BOB.username, BOB.password) as (client, _run):
        result = await client.call_tool("add", {"a": 2, "b": 3})
        assert not result.is_error and result.structured_content == {"result": 5}
    listed = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "deputy", "users", "list"], cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, "DEPUTY_CONFIG": str(example.config), "COLUMNS": "200"}, check=False)
    assert listed.returncode == 0, listed.stderr
    [row] = [line for line in listed.stdout.splitlines() if "bob@example" in line]
    assert row.split("│")[2].strip() == "example", listed.stdout  # the source column: the provider's name


def test_sigterm_stops_deputy_and_the_op(example: RunningExample) -> None:
    """Last in the module: the fixture's process, stopped as a supervisor stops it; nothing is left listening."""
    example.process.send_signal(signal.SIGTERM)
    assert example.process.wait(30) == 0
    for url in (example.deputy_url, example.issuer):
        parts = urlsplit(url)
        with socket.socket() as probe:
            assert probe.connect_ex((parts.hostname or "", parts.port or 0)) != 0, f"{url} still listens"
