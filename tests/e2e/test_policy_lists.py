"""List results filtered by policy through a running Deputy, over an HTTP upstream and a stdio one.

Each transport gets two servers with policies written here: `*-lists` lists every tool but
`delete_user`, the `demo://readme` resource and no prompt; `*-args` lists every tool and has a
rule on `delete_user`'s arguments, which must not take it off the list. The HTTP upstream is the
demo app behind a recorder (JSON responses); the stdio one is the demo over stdio, answered by
Deputy as SSE streams. `resumable-lists` and `resumable-args` have the same policies in front of
the demo with resumable streams (an event store: priming events, replay on `GET` with
`Last-Event-ID`).
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support.audit_log import read_log
from tests.support.databases import database_url
from tests.support.demo_policies import BROKEN_POLICY, GuardedDeputy
from tests.support.deputy_process import RunningDeputy, running_deputy
from tests.support.eventually import eventually
from tests.support.oauth_flow import tokens_for_alice
from tests.support.recording_upstream import recording_upstream
from tests.support.resumable_upstream import resumable_upstream

LISTS_POLICY = '''
@id("list-all-but-delete")
permit (principal, action == Deputy::Action::"tools/list", resource)
unless { context.name == "delete_user" };

@id("list-the-readme")
permit (principal, action == Deputy::Action::"resources/list", resource)
when { context.uri == "demo://readme" };

@id("call-harmless")
permit (principal, action in [Deputy::Action::"echo", Deputy::Action::"add"], resource);
'''

ARGS_POLICY = '''
@id("list-everything")
permit (principal, action in [Deputy::Action::"tools/list", Deputy::Action::"prompts/list"], resource);

@id("protect-low-ids")
forbid (principal, action == Deputy::Action::"delete_user", resource)
when { context.input.id < 100 };

@id("delete-others")
permit (principal, action == Deputy::Action::"delete_user", resource);
'''


TRANSPORTS = ["http", "stdio"]
STDIO_COMMAND = json.dumps([sys.executable, "-m", "deputy.demo", "--stdio"])


Setup = GuardedDeputy


@pytest.fixture(scope="module")
def setup(backend: str, upstream_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    directory = tmp_path_factory.mktemp(f"deputy-lists-{backend}")
    for name, policy in (("lists", LISTS_POLICY), ("args", ARGS_POLICY), ("broken", BROKEN_POLICY)):
        (directory / name).mkdir()
        (directory / name / f"{name}.cedar").write_text(policy)
    with recording_upstream() as (recorded_url, recorder), resumable_upstream() as resumable_url:
        extra = "".join(f'''
[servers.resumable-{policies}]
url = "{resumable_url}"
scopes = ["resumable-{policies}:tools"]
policies = "{policies}"
''' for policies in ("lists", "args"))
        for policies in ("lists", "args"):
            extra += f'''
[servers.http-{policies}]
url = "{recorded_url}"
scopes = ["http-{policies}:tools"]
policies = "{policies}"

[servers.stdio-{policies}]
command = {STDIO_COMMAND}
scopes = ["stdio-{policies}:tools"]
policies = "{policies}"
'''
        extra += f'''
[servers.http-broken]
url = "{recorded_url}"
credentials = "exchange"  # validated on first need, not at start (where an invalid set stops start-up)
scopes = ["http-broken:tools"]
policies = "broken"
'''
        with (database_url(backend, directory) as db_url,
              running_deputy(directory, db_url, upstream_url, extra) as deputy):
            yield Setup(deputy, recorder)


class Client:
    """One MCP client of one server: a token, and a session when the server is stdio."""

    def __init__(self, deputy: RunningDeputy, server: str, token: str, protocol: str = "2025-06-18") -> None:
        self.deputy = deputy
        self.server = server
        self.protocol = protocol
        self.headers = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream",
                        "Content-Type": "application/json", "MCP-Protocol-Version": protocol,
                        "X-Test-Client": "lists"}  # forwarded: tells the client's requests from Deputy's own

    async def post(self, body: dict[str, Any]) -> httpx.Response:
        async with httpx.AsyncClient(timeout=30) as http:
            return await http.post(self.deputy.resource(self.server), content=json.dumps(body), headers=self.headers)

    async def open(self) -> None:
        initialize = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": self.protocol, "capabilities": {}, "clientInfo": {"name": "lists", "version": "1"}}}
        response = await self.post(initialize)
        assert response.status_code == 200, response.text
        assert "result" in answers(response)[-1]
        if "mcp-session-id" in response.headers:
            self.headers["Mcp-Session-Id"] = response.headers["mcp-session-id"]
        initialized = await self.post({"jsonrpc": "2.0", "method": "notifications/initialized"})
        assert initialized.status_code == 202, initialized.text

    async def request(self, method: str, request_id: int = 1) -> dict[str, Any]:
        response = await self.post({"jsonrpc": "2.0", "id": request_id, "method": method, "params": {}})
        assert response.status_code == 200, response.text
        answer = answers(response)[-1]
        assert answer["id"] == request_id, answer
        return answer


def answers(response: httpx.Response) -> list[dict[str, Any]]:
    """The JSON-RPC messages of a response, whether a JSON body or an SSE stream."""
    if response.headers["content-type"].startswith("text/event-stream"):
        # An event with empty data (a resumable stream's priming event) is not a message.
        return [json.loads(line[len("data: "):]) for line in response.text.splitlines()
                if line.startswith("data: ") and line != "data: "]
    return [response.json()]


async def client(setup: Setup, server: str) -> Client:
    token, _ = await tokens_for_alice(setup.deputy, setup.deputy.resource(server))
    opened = Client(setup.deputy, server, token)
    await opened.open()
    return opened


def names(answer: dict[str, Any], key: str, field: str = "name") -> list[str]:
    assert "error" not in answer, answer
    return [item[field] for item in answer["result"][key]]


def list_requests_forwarded(setup: Setup, method: str) -> int:
    """How many `method` requests of the test's clients reached the HTTP upstream (not Deputy's catalog reads)."""
    count = 0
    for seen in setup.recorder.seen:
        try:
            message = json.loads(seen.body or b"null")
        except ValueError:
            continue
        if seen.headers.get("x-test-client") == "lists" and isinstance(message, dict) and \
                message.get("method") == method:
            count += 1
    return count


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_tool_denied_at_list_time_is_absent_the_others_present(setup: Setup, transport: str) -> None:
    lists = await client(setup, f"{transport}-lists")
    before = list_requests_forwarded(setup, "tools/list")
    tools = names(await lists.request("tools/list"), "tools")
    assert "delete_user" not in tools
    assert sorted(tools) == ["add", "echo", "list_users"]
    if transport == "http":  # the upstream answered in full; Deputy took the item out
        assert list_requests_forwarded(setup, "tools/list") == before + 1
    # What stays listed keeps the upstream's whole description of it.
    echo = next(tool for tool in (await lists.request("tools/list", 2))["result"]["tools"] if tool["name"] == "echo")
    assert echo["inputSchema"]["properties"]["text"]["type"] == "string"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_rule_on_arguments_does_not_take_a_tool_off_the_list(setup: Setup, transport: str) -> None:
    args = await client(setup, f"{transport}-args")
    assert sorted(names(await args.request("tools/list"), "tools")) == ["add", "delete_user", "echo", "list_users"]
    # The rule still decides the call itself.
    denied = await args.post({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                              "params": {"name": "delete_user", "arguments": {"id": 1, "reason": "x"}}})
    error = answers(denied)[-1]["error"]
    assert error["code"] == -32003 and error["data"]["policies"] == ["protect-low-ids"], error


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_prompts_and_resources_are_filtered_likewise(setup: Setup, transport: str) -> None:
    lists = await client(setup, f"{transport}-lists")
    assert names(await lists.request("resources/list"), "resources", "uri") == ["demo://readme"]
    assert names(await lists.request("prompts/list"), "prompts") == [], "no permit for prompts/list: none listed"
    args = await client(setup, f"{transport}-args")
    assert names(await args.request("prompts/list"), "prompts") == ["greet"]
    assert names(await args.request("resources/list"), "resources", "uri") == []


def completion(ref: dict[str, str], request_id: int, argument: str = "name", value: str = "A") -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": "completion/complete",
            "params": {"ref": ref, "argument": {"name": argument, "value": value}}}


GREET = {"type": "ref/prompt", "name": "greet"}
USER_TEMPLATE = {"type": "ref/resource", "uri": "demo://users/{id}"}


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_what_is_not_listed_is_not_completed(setup: Setup, transport: str) -> None:
    """completion/complete is decided as the visibility of what it completes: `*-lists` lists no prompt and no
    template, so completing greet's names (the user directory) or the template's ids is refused, by policy, and
    the upstream never sees it."""
    lists = await client(setup, f"{transport}-lists")
    before = list_requests_forwarded(setup, "completion/complete")
    for request_id, (ref, argument) in enumerate([(GREET, "name"), (USER_TEMPLATE, "id"),
                                                  ({"type": "ref/resource", "uri": "demo://users/1"}, "id")], 20):
        answer = answers(await lists.post(completion(ref, request_id, argument, "")))[-1]
        assert answer["id"] == request_id and answer["error"]["code"] == -32003, answer
        assert "denied by policy" in answer["error"]["message"]
        decision_id = answer["error"]["data"]["decision_id"]
        recorded = await eventually(functools.partial(_one_decision, setup, decision_id))
        assert (recorded["outcome"], recorded["method"], recorded["tool"]) == (
            "deny", "completion/complete", ref.get("name") or ref.get("uri")), recorded
    if transport == "http":
        assert list_requests_forwarded(setup, "completion/complete") == before


async def _one_decision(setup: Setup, decision_id: str) -> dict[str, Any]:
    found = (await read_log(setup.deputy.database_url)).decisions(decision_id=decision_id)
    assert len(found) == 1, f"decision {decision_id} recorded {len(found)} times"
    return dict(found[0].record)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_what_is_listed_is_completed(setup: Setup, transport: str) -> None:
    """`*-args` lists greet: its completion goes upstream and comes back whole; the template stays hidden; a
    concrete URI is decided as the resource of that URI (`*-lists` lists demo://readme, `*-args` no resource)."""
    args = await client(setup, f"{transport}-args")
    answer = answers(await args.post(completion(GREET, 30)))[-1]
    assert answer["result"]["completion"]["values"] == ["Ada Lovelace", "Alan Turing"], answer
    hidden = answers(await args.post(completion(USER_TEMPLATE, 31, "id", "")))[-1]
    assert hidden["error"]["code"] == -32003, hidden
    readme = {"type": "ref/resource", "uri": "demo://readme"}
    assert answers(await args.post(completion(readme, 32, "x", "")))[-1]["error"]["code"] == -32003
    lists = await client(setup, f"{transport}-lists")
    assert "result" in answers(await lists.post(completion(readme, 33, "x", "")))[-1]


@pytest.mark.parametrize("ref", [
    {"type": "ref/tool", "name": "delete_user"},  # no such reference type: what it names could not be decided
    {"type": "ref/prompt"}, {"type": "ref/prompt", "name": ""}, {"type": "ref/prompt", "name": ["greet"]},
    {"type": "ref/resource", "name": "greet"}, {"name": "greet"}, "greet", None,
])
async def test_a_completion_that_names_nothing_decidable_is_refused_before_the_upstream(
        setup: Setup, ref: Any) -> None:
    lists = await client(setup, "http-lists")
    before = list_requests_forwarded(setup, "completion/complete")
    body = completion({}, 40)
    body["params"]["ref"] = ref
    response = await lists.post(body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == -32602 and response.json()["id"] == 40
    assert list_requests_forwarded(setup, "completion/complete") == before


async def test_no_decision_means_no_list(setup: Setup) -> None:
    """Policies that do not validate: the list request is refused (503) and never forwarded."""
    token, _ = await tokens_for_alice(setup.deputy, setup.deputy.resource("http-broken"))
    broken = Client(setup.deputy, "http-broken", token)
    before = list_requests_forwarded(setup, "tools/list")
    response = await broken.post({"jsonrpc": "2.0", "id": 4, "method": "tools/list"})
    assert response.status_code == 503, response.text
    assert response.json()["id"] == 4
    assert "policy decisions are unavailable" in response.json()["error"]["message"]
    assert list_requests_forwarded(setup, "tools/list") == before


def sse_events(text: str) -> list[dict[str, str]]:
    """Each event of an SSE stream as its fields (data lines joined by LF), in order; comments dropped."""
    events: list[dict[str, str]] = []
    fields: dict[str, str] = {}
    for line in text.replace("\r\n", "\n").split("\n"):
        if not line:
            if fields:
                events.append(fields)
            fields = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        fields[name] = f"{fields[name]}\n{value}" if name == "data" and name in fields else value
    return events


# (server, method, items key, item name, what the policy lets the client see): each hides something.
RESUMABLE_LISTS = [("resumable-lists", "tools/list", "tools", "name", ["add", "echo", "list_users"]),
                   ("resumable-lists", "prompts/list", "prompts", "name", []),
                   ("resumable-args", "resources/list", "resources", "uri", [])]


async def resumed_answer(lists: Client, last_event_id: str) -> dict[str, Any]:
    """The first message replayed on a GET stream resumed after `last_event_id` (the stream stays open)."""
    headers = {**lists.headers, "Accept": "text/event-stream", "Last-Event-ID": last_event_id}
    del headers["Content-Type"]
    async with httpx.AsyncClient(timeout=30) as http, \
            http.stream("GET", lists.deputy.resource(lists.server), headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        text = ""
        async for chunk in response.aiter_text():
            text += chunk
            replayed = [event for event in sse_events(text) if event.get("data")]
            if replayed and text.replace("\r\n", "\n").endswith("\n\n"):
                return dict(json.loads(replayed[0]["data"]))
    raise AssertionError(f"the resumed stream ended without replaying anything: {text!r}")


async def resumable_list(setup: Setup, server: str, method: str,
                         request_id: int) -> tuple[Client, list[dict[str, str]]]:
    """A client of `server` speaking 2025-11-25 (so the upstream primes its streams), and the events of its
    POST of `method`."""
    token, _ = await tokens_for_alice(setup.deputy, setup.deputy.resource(server))
    lists = Client(setup.deputy, server, token, protocol="2025-11-25")
    await lists.open()
    response = await lists.post({"jsonrpc": "2.0", "id": request_id, "method": method, "params": {}})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/event-stream")
    return lists, sse_events(response.text)


@pytest.mark.parametrize(("server", "method", "key", "field", "listed"), RESUMABLE_LISTS)
async def test_a_resumed_stream_replays_the_list_filtered(setup: Setup, server: str, method: str, key: str,
                                                          field: str, listed: list[str]) -> None:
    """Issue 11 finding 6: a list answer replayed on `GET` with `Last-Event-ID` passes the same filter as on
    the POST that asked for it."""
    lists, events = await resumable_list(setup, server, method, 7)
    primed = events[0]["id"]  # the stream's first event: the upstream's priming event
    replayed = await resumed_answer(lists, primed)
    assert replayed["id"] == 7, replayed
    assert sorted(names(replayed, key, field)) == listed


async def test_a_priming_event_passes_and_is_no_error(setup: Setup) -> None:
    """Issue 11 finding 6: the priming event of a resumable stream (an id, empty data) passes as it is; the
    filtered list follows it, with no spurious -32603 before it."""
    _, events = await resumable_list(setup, "resumable-lists", "tools/list", 8)
    priming = events[0]
    assert priming.get("data", "") == "" and priming["id"], "the upstream primes its stream (resumability on)"
    answers_on_post = [json.loads(event["data"]) for event in events if event.get("data")]
    assert len(answers_on_post) == 1, answers_on_post
    assert answers_on_post[0]["id"] == 8
    assert sorted(names(answers_on_post[0], "tools")) == ["add", "echo", "list_users"]
