"""A browser-based MCP client in Chromium: a page on another origin does the whole flow with `fetch` (deputy.cors).

The page is served by a small HTTP server of the test's own on another port, so every request it
makes to Deputy is cross-origin and goes through the browser's CORS checks (Fetch Standard, "CORS protocol"):
discovery from the 401's challenge (RFC 9728 §5.1) with the header the TypeScript SDK adds,
authorization server metadata, dynamic registration with a loopback redirect, a client credentials
token (Basic authentication in `Authorization`), and MCP `initialize` + `tools/list`, reading the
`Mcp-Session-Id` response header in script. A page on an origin not in `gateway.allowed_origins`
reads the public metadata like any other but cannot call `/mcp/NAME`.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.support.agents import SECRET_AGENT, SECRET_AGENT_SECRET, agent_token, agents_config
from tests.support.browser import CHROMIUM, CHROMIUM_FLAGS
from tests.support.databases import database_url, require
from tests.support.deputy_process import RunningDeputy, running_deputy

pytestmark = pytest.mark.browser

PAGE = b"<!doctype html><meta charset=utf-8><title>browser MCP client</title><p>a page on another origin</p>"

# The whole client, run in the page: every fetch below is cross-origin.
FLOW = """
async ({mcp, clientId, secret}) => {
  const accept = "application/json, text/event-stream";
  const version = "2025-06-18";
  const initialize = {jsonrpc: "2.0", id: 1, method: "initialize",
                      params: {protocolVersion: version, capabilities: {}, clientInfo: {name: "page", version: "0"}}};
  const out = {};
  let r = await fetch(mcp, {method: "POST", headers: {"Content-Type": "application/json", "Accept": accept},
                            body: JSON.stringify(initialize)});
  out.unauthenticated = r.status;
  const challenge = r.headers.get("WWW-Authenticate");
  out.challenge = challenge;
  const metadataUrl = /resource_metadata="([^"]+)"/.exec(challenge)[1];
  r = await fetch(metadataUrl, {headers: {"MCP-Protocol-Version": version}});
  const resource = await r.json();
  out.resource = resource.resource;
  r = await fetch(resource.authorization_servers[0] + "/.well-known/oauth-authorization-server",
                  {headers: {"MCP-Protocol-Version": version}});
  const server = await r.json();
  r = await fetch(server.registration_endpoint, {method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({client_name: "Browser page", redirect_uris: ["http://localhost:9/callback"],
                          token_endpoint_auth_method: "none"})});
  out.registered = r.status;
  out.clientId = (await r.json()).client_id;
  r = await fetch(server.token_endpoint, {method: "POST",
    headers: {"Authorization": "Basic " + btoa(clientId + ":" + secret),
              "Content-Type": "application/x-www-form-urlencoded"},
    body: new URLSearchParams({grant_type: "client_credentials", resource: resource.resource})});
  out.tokenStatus = r.status;
  const token = (await r.json()).access_token;
  const headers = {"Content-Type": "application/json", "Accept": accept, "Authorization": "Bearer " + token};
  r = await fetch(mcp, {method: "POST", headers, body: JSON.stringify(initialize)});
  out.initialized = r.status;
  const session = r.headers.get("Mcp-Session-Id");
  out.session = session;
  await r.text();
  const next = {...headers, "Mcp-Session-Id": session, "MCP-Protocol-Version": version};
  r = await fetch(mcp, {method: "POST", headers: next,
                        body: JSON.stringify({jsonrpc: "2.0", method: "notifications/initialized"})});
  out.notified = r.status;
  r = await fetch(mcp, {method: "POST", headers: {...next, "Mcp-Method": "tools/list"},
                        body: JSON.stringify({jsonrpc: "2.0", id: 2, method: "tools/list"})});
  out.listed = r.status;
  out.listType = r.headers.get("Content-Type");
  out.listBody = await r.text();
  return out;
}
"""

# From an origin the operator did not list: the metadata is public, the MCP endpoint is not.
UNLISTED = """
async ({mcp, metadata, token}) => {
  const out = {};
  const r = await fetch(metadata);
  out.metadata = r.status;
  try {
    const answer = await fetch(mcp, {method: "POST", body: "{}",
      headers: {"Content-Type": "application/json", "Authorization": "Bearer " + token}});
    out.mcp = "read " + answer.status;
  } catch (error) {
    out.mcp = error.name;
  }
  return out;
}
"""


class _Page(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(PAGE)))
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, format: str, *args: Any) -> None:
        return None


@pytest.fixture(scope="module", params=["sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def pages() -> Iterator[tuple[str, str]]:
    """Two page origins on loopback: the first is listed in `gateway.allowed_origins`, the second is not."""
    servers = [ThreadingHTTPServer(("127.0.0.1", 0), _Page) for _ in range(2)]
    threads = [threading.Thread(target=server.serve_forever, daemon=True) for server in servers]
    for thread in threads:
        thread.start()
    try:
        listed, unlisted = (f"http://127.0.0.1:{server.server_address[1]}" for server in servers)
        yield listed, unlisted
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


@pytest.fixture(scope="module")
def browser_deputy(backend: str, upstream_url: str, pages: tuple[str, str],
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDeputy]:
    directory: Path = tmp_path_factory.mktemp(f"deputy-browser-cors-{backend}")
    extra = agents_config(directory) + f'\n[gateway]\nallowed_origins = ["{pages[0]}"]\n'
    with database_url(backend, directory) as url, running_deputy(directory, url, upstream_url, extra) as running:
        yield running


def _messages(content_type: str, body: str) -> list[dict[str, Any]]:
    if content_type.startswith("text/event-stream"):
        return [json.loads(line[5:]) for line in body.splitlines() if line.startswith("data:")]
    return [json.loads(body)]


async def test_a_page_on_a_listed_origin_runs_the_whole_flow(browser_deputy: RunningDeputy,
                                                              pages: tuple[str, str]) -> None:
    require("Debian's chromium (apt-get install chromium)", shutil.which("chromium") is not None)
    from playwright.async_api import async_playwright

    listed, unlisted = pages
    token = await agent_token(browser_deputy)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            page = await browser.new_page()
            await page.goto(f"{listed}/client")
            out = await page.evaluate(FLOW, {"mcp": browser_deputy.resource("demo"), "clientId": SECRET_AGENT,
                                             "secret": SECRET_AGENT_SECRET})
            other = await browser.new_page()
            await other.goto(f"{unlisted}/client")
            refused = await other.evaluate(UNLISTED, {
                "mcp": browser_deputy.resource("demo"), "token": token,
                "metadata": f"{browser_deputy.url}/.well-known/oauth-authorization-server"})
        finally:
            await browser.close()

    assert out["unauthenticated"] == 401
    assert "resource_metadata=" in out["challenge"], "WWW-Authenticate is exposed to the page"
    assert out["resource"] == browser_deputy.resource("demo")
    assert out["registered"] == 201 and out["clientId"]
    assert out["tokenStatus"] == 200
    assert out["initialized"] == 200
    assert out["session"], "Mcp-Session-Id is exposed to the page"
    assert out["notified"] == 202
    assert out["listed"] == 200, out["listBody"]
    tools = _messages(out["listType"], out["listBody"])[-1]["result"]["tools"]
    assert "add" in {tool["name"] for tool in tools}

    assert refused["metadata"] == 200, "public metadata answers any origin"
    assert refused["mcp"] == "TypeError", f"the unlisted origin's MCP call was readable: {refused['mcp']}"
