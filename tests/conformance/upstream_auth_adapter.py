"""The client under test for the conformance suite's client authorization scenarios: Deputy's upstream OAuth client.

``conformance client --command "python -m tests.conformance.upstream_auth_adapter" --suite auth`` (0.2.0-alpha.12)
starts, per scenario, a mock MCP server and its mock authorization server, then runs this with the server's URL as
its one argument and ``MCP_CONFORMANCE_SCENARIO``, ``MCP_CONFORMANCE_PROTOCOL_VERSION`` and, when the scenario
pre-registers a client, ``MCP_CONFORMANCE_CONTEXT`` (JSON: ``client_id``, ``client_secret``, ``issuer``) in its
environment. The mock servers judge what reaches them; here the client they see is Deputy (issue 15):

1. Deputy runs in this process (uvicorn on a free loopback port, a temporary data directory, SQLite) with one
   server ``conf`` = the scenario's URL, ``credentials = "oauth"``, the mock's hosts trusted, and the scenario's
   pre-registered client when it gives one; a local user is added. Deputy requires a configured client's
   ``authorization_server`` (it is presented to no other), so the adapter finds it as the operator would, before
   writing the configuration: the scenario's server answers an unauthenticated request ``401`` with
   ``WWW-Authenticate: Bearer resource_metadata="..."`` (RFC 9728 §5.1), and that protected resource metadata's
   first ``authorization_servers`` entry (§2) is the issuer pinned (:func:`authorization_server_of`).
2. That user gets a Deputy access token through Deputy's own ``/authorize`` and ``/token``
   (:func:`tests.support.oauth_flow.tokens_for_alice`), in a cookie-keeping ``httpx`` client: her browser.
3. The official MCP SDK client calls ``/mcp/conf`` with it (``initialize`` or, on the 2026-07-28 wire, none;
   ``tools/list``; ``tools/call`` of the tool offered). When Deputy answers that she must connect her account
   (an error carrying a ``/connect/conf`` URL), her browser opens it, presses Connect, follows the mock
   authorization server's immediate redirect back into Deputy's callback, and the refused step is sent again.
   A person asked to connect more than :data:`MAX_CONNECTS` times in one run gives up. Deputy starts an
   authorization only when she presses Connect, and does not ask her again for scopes she already granted (an
   upstream that still answers ``insufficient_scope`` for them gets its refusal relayed): ``auth/scope-retry-limit``.

Exit 0 when the tool was called; 1 with the reason on standard error otherwise (scenarios that expect Deputy to
refuse, such as ``auth/iss-wrong-issuer``, allow that). Nothing printed holds a token, a code or a secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urljoin, urlsplit

import httpx
import httpx2
import uvicorn
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from deputy.app import create_app
from deputy.cli.serving import Lifespan
from deputy.config import load_settings
from deputy.page_paths import CONNECTIONS_PAGE
from deputy.services import Services
from tests.support.deputy_process import PASSWORD, PUBLIC_CLIENT, REDIRECT_URI, RunningDeputy
from tests.support.oauth_flow import tokens_for_alice
from tests.support.sdk_client import REDIRECT_STATUSES, page_text, parse_forms

SERVER = "conf"  # Deputy's name for the scenario's MCP server
USERNAME = "conformance"
# Every host the suite's mock servers listen on: their URLs (and the authorization servers their metadata names)
# are fetched without the SSRF address filter, as an operator vouches for an internal authorization server.
TRUSTED_HOSTS = ("localhost", "127.0.0.1")
MAX_CONNECTS = 3  # the suite's own bound on authorization attempts (auth/scope-retry-limit)
MAX_PAGE_STEPS = 12
# The 2026-07-28 wire has no initialize: the SDK adopts the version directly; older wires open with initialize.
MODERN_VERSIONS = frozenset({"2026-07-28"})
# What finds a pre-registered client's authorization server: an unauthenticated request, answered 401 with a
# challenge naming the protected resource metadata (RFC 9728 §5.1).
PROBE = {"jsonrpc": "2.0", "id": 0, "method": "initialize",
         "params": {"protocolVersion": "2025-11-25", "capabilities": {},
                    "clientInfo": {"name": "deputy-conformance-adapter", "version": "0"}}}
RESOURCE_METADATA = re.compile(r'resource_metadata="([^"]+)"')

T = TypeVar("T")


@dataclass(frozen=True)
class Scenario:
    """What the suite handed this run."""

    name: str
    server_url: str
    protocol_version: str
    context: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_run(cls, argv: list[str], environ: Mapping[str, str]) -> Scenario:
        if len(argv) != 2:
            raise SystemExit(f"usage: {argv[0]} SERVER_URL (run by `conformance client --command`)")
        context = json.loads(environ.get("MCP_CONFORMANCE_CONTEXT") or "{}")
        return cls(environ.get("MCP_CONFORMANCE_SCENARIO", "(unnamed)"), argv[1],
                   environ.get("MCP_CONFORMANCE_PROTOCOL_VERSION", "2025-11-25"), context)


class ConnectStopped(Exception):
    """Deputy's connect flow ended on a page other than the connections page: what it said."""


def _toml(value: str) -> str:
    return json.dumps(value)  # a JSON string is a TOML basic string for the characters used here


def pre_registers(scenario: Scenario) -> bool:
    """Whether the scenario hands Deputy a client registered in advance (auth/pre-registration)."""
    return isinstance(scenario.context.get("client_id"), str)


async def authorization_server_of(server_url: str) -> str:
    """The issuer the scenario's server names, as an operator finds it before registering a client there: its
    ``401`` challenge's ``resource_metadata`` (RFC 9728 §5.1), then that document's first ``authorization_servers``
    entry (§2). Anything else stops the run: Deputy is never configured with a client it could not pin."""
    async with httpx.AsyncClient(timeout=30) as http:
        answer = await http.post(server_url, json=PROBE, headers={"Accept": "application/json, text/event-stream"})
        found = RESOURCE_METADATA.search(answer.headers.get("www-authenticate", ""))
        if answer.status_code != 401 or found is None:
            raise RuntimeError(f"the scenario's server answered HTTP {answer.status_code} without a resource_metadata "
                               "challenge: no authorization server to pin the pre-registered client to")
        metadata = (await http.get(found[1])).json()
    servers = metadata.get("authorization_servers") if isinstance(metadata, dict) else None
    if not isinstance(servers, list) or not servers or not isinstance(servers[0], str):
        raise RuntimeError(f"the protected resource metadata at {found[1]} names no authorization server")
    return servers[0]


def config_text(scenario: Scenario, port: int, data_dir: Path, authorization_server: str | None = None) -> str:
    """Deputy's configuration for one scenario: the one server, its OAuth table, the test client."""
    oauth = [f"trusted_hosts = {json.dumps(list(TRUSTED_HOSTS))}"]
    # A scenario that pre-registers Deputy's client gives it in the context (auth/pre-registration): configured,
    # pinned to the authorization server it was registered at.
    for key in ("client_id", "client_secret", "client_auth"):
        if isinstance(scenario.context.get(key), str):
            oauth.append(f"{key} = {_toml(scenario.context[key])}")
    if authorization_server is not None:
        oauth.append(f"authorization_server = {_toml(authorization_server)}")
    return f'''
public_url = "http://127.0.0.1:{port}"
port = {port}
data_dir = {_toml(str(data_dir))}
log_level = "warning"

[servers.{SERVER}]
title = "Conformance scenario {scenario.name}"
url = {_toml(scenario.server_url)}
credentials = "oauth"

[servers.{SERVER}.oauth]
{chr(10).join(oauth)}

[[clients]]
client_id = "{PUBLIC_CLIENT}"
client_name = "Conformance adapter"
redirect_uris = ["{REDIRECT_URI}"]
'''


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield  # the suite ends this process with SIGTERM on its timeout: the default handler is what it wants


@contextlib.asynccontextmanager
async def deputy_in_process(scenario: Scenario, directory: Path) -> AsyncIterator[RunningDeputy]:
    """Deputy serving on a free loopback port of this process, with the scenario's server and one local user."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = int(listener.getsockname()[1])
    config = directory / "deputy.toml"
    pinned = await authorization_server_of(scenario.server_url) if pre_registers(scenario) else None
    config.write_text(config_text(scenario, port, directory / "data", pinned))
    settings = load_settings(config, environ={})  # nothing of the caller's DEPUTY_* environment applies
    services = Services.open(settings)
    app = create_app(settings, services)
    lifespan = Lifespan(app)
    await lifespan.startup()
    try:
        await services.users.add(USERNAME, PASSWORD)
        # A long keep-alive: with every scenario's process on the same CPUs, a pooled connection the server
        # closes after the default 5 s idle, just as the client reuses it, would fail a step for no reason of
        # Deputy's OAuth client (the one thing under test here; Deputy's listener limits are tested elsewhere).
        server = _Server(uvicorn.Config(app, lifespan="off", log_level="warning", access_log=False,
                                        timeout_keep_alive=120, timeout_graceful_shutdown=1))
        serving = asyncio.create_task(server.serve(sockets=[listener]))
        try:
            while not server.started:
                if serving.done():
                    serving.result()
                    raise RuntimeError("Deputy's listener stopped before it started")
                await asyncio.sleep(0.01)
            yield RunningDeputy(settings.public_url, settings.data_dir, config, settings.database_url,
                                scenario.server_url, {})
        finally:
            server.should_exit = True
            await serving
    finally:
        listener.close()
        await lifespan.shutdown()


# ----------------------------------------------------------------------------- her browser at /connect/conf


def _is_connections_page(url: str, deputy: RunningDeputy) -> bool:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}" == deputy.url and parts.path == CONNECTIONS_PAGE


async def connect_account(browser: httpx.AsyncClient, connect_url: str, deputy: RunningDeputy) -> None:
    """Open ``connect_url`` as the signed-in user would, press Connect (signing in first if asked), follow the
    authorization server's redirect back into Deputy's callback; return at the redirect to her connections page.

    Raises ConnectStopped with the page's text when Deputy (or the authorization server) stops anywhere else."""
    response = await browser.get(connect_url, follow_redirects=False)
    submitted: set[str] = set()
    for _ in range(MAX_PAGE_STEPS):
        here = str(response.url)
        if response.status_code in REDIRECT_STATUSES:
            target = urljoin(here, response.headers.get("location", ""))
            if _is_connections_page(target, deputy):
                return
            response = await browser.get(target, follow_redirects=False)
            continue
        forms = [form for form in parse_forms(response.text) if form.method == "POST"] \
            if response.status_code == 200 else []
        if not forms:
            raise ConnectStopped(f"HTTP {response.status_code} at {urlsplit(here).path}: "
                                 f"{page_text(response.text)[:600]}")
        form = forms[0]
        kind = "sign-in" if form.has_password() else "connect"
        if kind in submitted:  # the same form again: refused credentials, or a connect that went nowhere
            raise ConnectStopped(f"the {kind} form came back at {urlsplit(here).path}: "
                                 f"{page_text(response.text)[:600]}")
        submitted.add(kind)
        data = (form.data(username=USERNAME, password=PASSWORD) if kind == "sign-in"
                else form.data(form.buttons[0] if form.buttons else None))
        response = await browser.post(form.resolve_action(here), data=data, follow_redirects=False)
    raise ConnectStopped(f"gave up after {MAX_PAGE_STEPS} pages at {urlsplit(str(response.url)).path}")


def connect_url_in(value: Any, deputy: RunningDeputy) -> str | None:
    """The first URL under Deputy's ``/connect/`` anywhere in an error's data (``connect_url``, or a URL-mode
    elicitation's ``url``): where Deputy sends her to connect."""
    if isinstance(value, str):
        return value if value.startswith(f"{deputy.url}/connect/") else None
    children = value.values() if isinstance(value, Mapping) else value if isinstance(value, list | tuple) else ()
    for child in children:
        if (found := connect_url_in(child, deputy)) is not None:
            return found
    return None


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


# ----------------------------------------------------------------------------- the MCP calls through Deputy


@dataclass
class Person:
    """The test user: her browser (signed in at Deputy) and how often she has been sent to connect."""

    deputy: RunningDeputy
    browser: httpx.AsyncClient
    connects: int = 0
    log: list[str] = field(default_factory=list)

    async def connect_if_asked(self, exc: BaseException, step: str) -> bool:
        """Connect when ``exc`` is Deputy asking her to (True: try the step again); False when it is not."""
        for leaf in _leaves(exc):
            if not isinstance(leaf, MCPError):
                continue
            url = connect_url_in(leaf.error.model_dump(mode="json"), self.deputy)
            if url is None:
                continue
            if self.connects >= MAX_CONNECTS:
                self.log.append(f"{step}: asked to connect a {self.connects + 1}th time; giving up")
                return False
            self.connects += 1
            self.log.append(f"{step}: Deputy asked to connect ({leaf.error.message[:200]}); connect #{self.connects}")
            await connect_account(self.browser, url, self.deputy)
            return True
        return False

    async def step(self, name: str, call: Callable[[], Awaitable[T]]) -> T:
        while True:
            try:
                result = await call()
            except MCPError as exc:
                if not await self.connect_if_asked(exc, name):
                    raise
                continue
            self.log.append(f"{name}: ok")
            return result


@contextlib.asynccontextmanager
async def mcp_session(person: Person, token: str, version: str) -> AsyncIterator[Client]:
    """An SDK client session at ``/mcp/conf`` with her Deputy token; an ``initialize`` Deputy refuses until she
    connects is retried after connecting (a fresh session each time)."""
    mode = version if version in MODERN_VERSIONS else "legacy"

    async def note_refusal(response: httpx2.Response) -> None:
        # The SDK turns an HTTP error without a JSON-RPC body into "Server returned an error response": keep
        # what Deputy actually answered, for the scenario's stderr.txt (Deputy's answers carry no token).
        if response.status_code >= 400:
            body = (await response.aread())[:300].decode("utf-8", "replace")
            person.log.append(f"HTTP {response.status_code} {response.headers.get('content-type', '')}: {body}")

    while True:
        stack = contextlib.AsyncExitStack()
        http = await stack.enter_async_context(httpx2.AsyncClient(
            headers={"Authorization": f"Bearer {token}"}, timeout=httpx2.Timeout(30.0, read=60.0),
            event_hooks={"response": [note_refusal]}))
        try:
            client = await stack.enter_async_context(
                Client(streamable_http_client(person.deputy.resource(SERVER), http_client=http), mode=mode,
                       cache=None))
        except Exception as exc:
            await stack.aclose()
            if not await person.connect_if_asked(exc, "initialize"):
                raise
            continue
        person.log.append("initialize: ok" if mode == "legacy" else f"session: {mode}, no initialize")
        async with stack:
            yield client
        return


async def run(scenario: Scenario) -> list[str]:
    """The whole run; what happened, step by step. Raises on the first step that does not succeed."""
    with tempfile.TemporaryDirectory(prefix="deputy-conformance-") as directory:
        async with deputy_in_process(scenario, Path(directory)) as deputy, \
                httpx.AsyncClient(timeout=30) as browser:
            person = Person(deputy, browser)
            try:
                token, _refresh = await tokens_for_alice(deputy, deputy.resource(SERVER), username=USERNAME,
                                                         password=PASSWORD, browser=browser)
                person.log.append("signed in at Deputy; Deputy access token issued")
                async with mcp_session(person, token, scenario.protocol_version) as client:
                    tools = await person.step("tools/list", client.list_tools)
                    if not tools.tools:
                        raise RuntimeError("the upstream offers no tool")
                    name = tools.tools[0].name
                    result = await person.step(f"tools/call {name}", lambda: client.call_tool(name, {}))
                    if result.is_error:
                        raise RuntimeError(f"tools/call {name} answered an error result")
            except BaseException as exc:
                exc.add_note("\n".join(person.log))
                raise
            return person.log


def main() -> None:
    scenario = Scenario.from_run(sys.argv, os.environ)
    try:
        log = asyncio.run(run(scenario))
    except BaseException as exc:  # the suite keeps standard error in the scenario's stderr.txt
        if isinstance(exc, KeyboardInterrupt | SystemExit):
            raise
        reasons = "; ".join(f"{type(leaf).__name__}: {leaf}" for leaf in _leaves(exc))
        notes = "\n".join(getattr(exc, "__notes__", []))
        print(f"{scenario.name}: did not complete: {reasons}\n{notes}", file=sys.stderr)
        sys.exit(1)
    print(f"{scenario.name}: completed\n" + "\n".join(log))


if __name__ == "__main__":
    main()
