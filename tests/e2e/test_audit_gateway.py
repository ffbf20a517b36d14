"""The audit log on the real request path: running Deputys on SQLite and PostgreSQL, the log read from its tables.

A Deputy with a policy-guarded server (`guarded`, the demo policies) and a server without policies (`plain`),
both in front of a recording upstream whose `AuditProbe` looks in the database for a call's `decision` record
at the moment the call arrives. A second, killable Deputy keeps argument digests only and is killed with
SIGKILL under load. Nothing is read through Deputy's own audit code: `tests.support.audit_log` selects the
rows and recomputes the tree, the head, the stored nodes and every checkpoint itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import rfc8785
from sqlalchemy import select

from deputy.audit.records import recorded_arguments
from deputy.storage.db import Database
from deputy.storage.tables import users
from tests.support.audit_log import (
    AuditProbe,
    KillableDeputy,
    LogSnapshot,
    arguments_digest,
    block_audit_writes,
    killable_deputy,
    log_verifier,
    read_log,
    unblock_audit_writes,
    verify_log,
)
from tests.support.databases import database_url
from tests.support.delegation import claims_of
from tests.support.demo_policies import DEMO_POLICIES
from tests.support.deputy_process import (
    CONFIDENTIAL_CLIENT,
    CONFIDENTIAL_SECRET,
    PASSWORD,
    PUBLIC_CLIENT,
    RunningDeputy,
)
from tests.support.eventually import eventually
from tests.support.oauth_flow import tokens_for_alice
from tests.support.recording_upstream import RequestRecorder, recording_upstream

BOB_PASSWORD = "bob's own long passphrase"
POLICY_DENIED = -32003
JSONRPC_INTERNAL_ERROR = -32603
AUDIT_CONFIG = """
[audit]
checkpoint_interval_ms = 100
"""


@dataclass
class AuditSetup:
    deputy: RunningDeputy
    recorder: RequestRecorder
    probe: AuditProbe


@dataclass
class CrashSetup:
    killable: KillableDeputy
    recorder: RequestRecorder
    probe: AuditProbe

    @property
    def deputy(self) -> RunningDeputy:
        return self.killable.deputy


# Permits `add` only when Cedar sees exactly 2^53 + 1 as `a`: a double would hold 2^53 there.
EXACT_POLICY = """
@id("exact-add")
permit (principal, action == Deputy::Action::"add", resource)
when { context.input.a == 9007199254740993 };
"""


def exact_server(recorded_url: str, directory: Path) -> str:
    """A server whose one policy tells 2^53 + 1 from 2^53."""
    policies = directory / "exact-policies"
    policies.mkdir()
    (policies / "exact.cedar").write_text(EXACT_POLICY, encoding="utf-8")
    return f'''
[servers.exact]
url = "{recorded_url}"
scopes = ["exact:tools"]
policies = "{policies}"
big_integers = "pass"  # the demo reads integers exactly: decided and recorded as they are
'''


def servers(recorded_url: str) -> str:
    return f'''
[servers.guarded]
url = "{recorded_url}"
scopes = ["demo:tools", "demo:admin"]
policies = "{DEMO_POLICIES}"
big_integers = "pass"  # the demo reads integers exactly: decided and recorded as they are

[servers.plain]
url = "{recorded_url}"
scopes = ["plain:tools"]
big_integers = "pass"  # the demo reads integers exactly: decided and recorded as they are
'''


@pytest.fixture(scope="module")
def setup(backend: str, upstream_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuditSetup]:
    directory = tmp_path_factory.mktemp(f"deputy-audit-{backend}")
    with recording_upstream() as (recorded_url, recorder), database_url(backend, directory) as db_url:
        probe = AuditProbe(recorder.app, db_url)
        recorder.app = probe
        with killable_deputy(
            directory,
            db_url,
            upstream_url,
            servers(recorded_url) + exact_server(recorded_url, directory) + AUDIT_CONFIG,
            users={"alice": PASSWORD, "bob": BOB_PASSWORD},
        ) as killable:
            yield AuditSetup(killable.deputy, recorder, probe)


@pytest.fixture(scope="module")
def crash_setup(backend: str, upstream_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CrashSetup]:
    """A Deputy keeping only argument digests, which a test may kill and restart."""
    directory = tmp_path_factory.mktemp(f"deputy-audit-digest-{backend}")
    with recording_upstream() as (recorded_url, recorder), database_url(backend, directory) as db_url:
        probe = AuditProbe(recorder.app, db_url)
        recorder.app = probe
        extra = servers(recorded_url) + AUDIT_CONFIG + 'arguments = "digest"\n'
        with killable_deputy(directory, db_url, upstream_url, extra) as killable:
            yield CrashSetup(killable, recorder, probe)


@pytest.fixture(scope="module")
async def alice(setup: AuditSetup) -> str:
    token, _ = await tokens_for_alice(setup.deputy, setup.deputy.resource("guarded"))
    return token


@pytest.fixture(scope="module")
async def alice_plain(setup: AuditSetup) -> str:
    token, _ = await tokens_for_alice(setup.deputy, setup.deputy.resource("plain"))
    return token


@pytest.fixture(scope="module")
async def alice_exact(setup: AuditSetup) -> str:
    token, _ = await tokens_for_alice(setup.deputy, setup.deputy.resource("exact"))
    return token


@pytest.fixture(scope="module")
async def crash_alice(crash_setup: CrashSetup) -> str:
    token, _ = await tokens_for_alice(crash_setup.deputy, crash_setup.deputy.resource("plain"))
    return token


def marker() -> str:
    return uuid.uuid4().hex


async def post(
    deputy: RunningDeputy, token: str, server: str, body: dict[str, Any], http: httpx.AsyncClient | None = None
) -> httpx.Response:
    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "application/json, text/event-stream",
        "Content-Type": "application/json",
        "MCP-Protocol-Version": "2025-06-18",
    }
    if http is not None:
        return await http.post(deputy.resource(server), content=json.dumps(body), headers=headers)
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.post(deputy.resource(server), content=json.dumps(body), headers=headers)


async def call(
    deputy: RunningDeputy,
    token: str,
    server: str,
    tool: str,
    arguments: dict[str, Any],
    request_id: int = 1,
    http: httpx.AsyncClient | None = None,
) -> httpx.Response:
    body = {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": tool, "arguments": arguments},
    }
    return await post(deputy, token, server, body, http)


def succeeded(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    assert "result" in response.json() and "error" not in response.json(), response.text


def forwarded_calls(recorder: RequestRecorder) -> list[tuple[str, Any]]:
    """(tool, arguments) of every tools/call the upstream received, in order."""
    calls = []
    for request in list(recorder.seen):
        try:
            message = json.loads(request.body or b"null")
        except ValueError:
            continue
        if isinstance(message, dict) and message.get("method") == "tools/call":
            calls.append((message["params"]["name"], message["params"].get("arguments")))
    return calls


def demo_policy_version() -> str:
    """The policy set's version, computed here: SHA-256 over the length-prefixed sorted names and contents."""
    digest = hashlib.sha256()
    for path in sorted(Path(DEMO_POLICIES).glob("*.cedar"), key=lambda p: p.name):
        for part in (path.name.encode(), path.read_text(encoding="utf-8").encode()):
            digest.update(len(part).to_bytes(8, "big") + part)
    return digest.hexdigest()


async def user_id(database: str, username: str) -> str:
    db = Database(database)
    try:
        async with db.engine.connect() as conn:
            found = (await conn.execute(select(users.c.user_id).where(users.c.username == username))).scalar_one()
    finally:
        await db.dispose()
    return str(found)


def one(leaves: list[Any], what: str) -> Any:
    assert len(leaves) == 1, f"expected one {what}, found {len(leaves)}"
    return leaves[0]


async def test_calls_are_recorded_with_who_what_and_why(setup: AuditSetup, alice: str) -> None:
    """An allowed call: a `decision` naming alice, her client, the token, the exact arguments, the deciding policy
    and the policy set's version, then its `call.outcome` over exactly the bytes she got back. A denied call: a
    `decision` with the forbidding policy and no outcome. The token's issue was recorded before either."""
    deputy, tag = setup.deputy, marker()
    allowed_args = {"text": f"audited {tag}"}
    response = await call(deputy, alice, "guarded", "echo", allowed_args)
    succeeded(response)
    denied_args = {"id": 5, "reason": f"audited {tag}"}
    denied = await call(deputy, alice, "guarded", "delete_user", denied_args, request_id=2)
    assert denied.status_code == 200, denied.text
    denial = denied.json()["error"]
    assert denial["code"] == POLICY_DENIED and denial["data"]["outcome"] == "deny", denied.text
    # A barrier: once this later call's outcome is in, the denied call's would be too, had it one.
    barrier_args = {"text": f"barrier {tag}"}
    succeeded(await call(deputy, alice, "guarded", "echo", barrier_args, request_id=3))

    async def logged() -> LogSnapshot:
        snapshot = await read_log(deputy.database_url)
        for args in (allowed_args, barrier_args):
            decision = one(snapshot.decisions(tool="echo", arguments=args), "echo decision")
            one(snapshot.outcomes_of(decision.record["decision_id"]), "call.outcome")
        return snapshot

    snapshot = await eventually(logged)
    claims = claims_of(alice)
    alice_id = await user_id(deputy.database_url, "alice")

    allowed = one(snapshot.decisions(tool="echo", arguments=allowed_args), "allowed decision")
    record = allowed.record
    assert record["outcome"] == "allow"
    assert record["user"] == alice_id == claims["sub"]
    assert record["agent"] == PUBLIC_CLIENT
    assert record["actors"] == [] and record["txn"] is None
    assert record["jti"] == claims["jti"]
    assert record["server"] == "guarded"
    assert record["method"] == "tools/call"
    assert record["policies"] == ["demo-tools"]
    assert record["policy_version"] == demo_policy_version()
    assert isinstance(record["schema_version"], str) and len(record["schema_version"]) == 64
    assert record["errors"] == [] and record["approval_id"] is None
    assert len(record["decision_id"]) == 32

    outcome = one(snapshot.outcomes_of(record["decision_id"]), "call.outcome")
    assert outcome.index > allowed.index
    assert outcome.record["status"] == 200
    assert outcome.record["response_bytes"] == len(response.content)
    assert outcome.record["response_sha256"] == hashlib.sha256(response.content).hexdigest()
    assert outcome.record["jti"] == claims["jti"] and outcome.record["method"] == "tools/call"
    assert type(outcome.record["duration_us"]) is int  # a duration is recorded (its size is not a test matter)
    assert outcome.record["complete"] is True  # the answer ended as the upstream ended it

    refused = one(snapshot.decisions(tool="delete_user", arguments=denied_args), "denied decision")
    assert refused.record["outcome"] == "deny"
    assert refused.record["policies"] == ["demo-protect-low-ids"]
    assert refused.record["decision_id"] == denial["data"]["decision_id"]
    assert refused.record["user"] == alice_id and refused.record["jti"] == claims["jti"]
    assert refused.record["policy_version"] == demo_policy_version()
    assert snapshot.outcomes_of(refused.record["decision_id"]) == []
    assert ("delete_user", denied_args) not in forwarded_calls(setup.recorder)

    issued = one(
        [leaf for leaf in snapshot.of_type("token.issued") if leaf.record["jti"] == claims["jti"]], "token.issued"
    )
    assert issued.index < allowed.index
    assert issued.record["sub"] == alice_id and issued.record["client_id"] == PUBLIC_CLIENT
    assert issued.record["aud"] == deputy.resource("guarded")
    assert issued.record["grant_type"] == "authorization_code"
    assert issued.record["exp"] == claims["exp"]


async def test_a_server_without_policies_still_records_every_call(setup: AuditSetup, alice_plain: str) -> None:
    deputy, tag = setup.deputy, marker()
    arguments = {"text": f"plain {tag}"}
    succeeded(await call(deputy, alice_plain, "plain", "echo", arguments))
    unknown = await post(
        deputy, alice_plain, "plain", {"jsonrpc": "2.0", "id": 2, "method": f"vendor/{tag}", "params": {}}
    )
    assert unknown.status_code == 200, unknown.text  # forwarded: the upstream itself says it does not know it
    ping = await post(deputy, alice_plain, "plain", {"jsonrpc": "2.0", "id": 3, "method": "ping"})
    assert ping.status_code == 200, ping.text

    async def logged() -> LogSnapshot:
        snapshot = await read_log(deputy.database_url)
        decision = one(snapshot.decisions(tool="echo", arguments=arguments), "decision")
        one(snapshot.outcomes_of(decision.record["decision_id"]), "call.outcome")
        return snapshot

    snapshot = await eventually(logged)
    record = one(snapshot.decisions(tool="echo", arguments=arguments), "decision").record
    assert record["outcome"] == "allow" and record["server"] == "plain"
    assert record["policies"] == [] and record["policy_version"] is None and record["schema_version"] is None
    assert record["jti"] == claims_of(alice_plain)["jti"]
    assert one(snapshot.decisions(method=f"vendor/{tag}"), "unknown method decision").record["outcome"] == "allow"
    assert snapshot.decisions(method="ping") == []


async def test_every_forwarded_call_was_durably_recorded_before_it_arrived(
    setup: AuditSetup, alice: str, alice_plain: str
) -> None:
    """The probe in front of the upstream found each call's committed `decision` when the call arrived; and the
    calls the upstream received are exactly the allowed `tools/call` decisions in the log."""
    tag = marker()
    await asyncio.gather(
        *(
            call(setup.deputy, token, server, "echo", {"text": f"order {tag} {i}"})
            for i, (token, server) in enumerate([(alice, "guarded"), (alice_plain, "plain")] * 4)
        )
    )
    forwarded = forwarded_calls(setup.recorder)
    probed = list(setup.probe.calls)
    assert sum(1 for _, args in forwarded if f"order {tag}" in str(args)) == 8
    assert len(probed) == len(forwarded)
    assert Counter((c.tool, rfc8785.dumps(c.arguments)) for c in probed) == Counter(
        (tool, rfc8785.dumps(args)) for tool, args in forwarded
    )
    assert [c for c in probed if not c.recorded] == []

    snapshot = await read_log(setup.deputy.database_url)
    allowed = [leaf.record for leaf in snapshot.decisions(outcome="allow", method="tools/call")]
    assert Counter((r["tool"], rfc8785.dumps(r["arguments"])) for r in allowed) == Counter(
        (tool, rfc8785.dumps(args)) for tool, args in forwarded
    )


async def test_digest_mode_keeps_the_arguments_hash_never_the_arguments(
    crash_setup: CrashSetup, crash_alice: str
) -> None:
    deputy, tag = crash_setup.deputy, marker()
    secret = f'sécret ✓ "{tag}" \\ \u0001 {"z" * 3}'
    arguments = {"text": secret}
    succeeded(await call(deputy, crash_alice, "plain", "echo", arguments))
    snapshot = await read_log(deputy.database_url)
    decision = one(snapshot.decisions(tool="echo", arguments=arguments_digest(arguments)), "decision")
    assert decision.record["arguments"] == {
        "sha256": hashlib.sha256(f'{{"text":"sécret ✓ \\"{tag}\\" \\\\ \\u0001 zzz"}}'.encode()).hexdigest()
    }
    assert decision.record["outcome"] == "allow" and decision.record["jti"] == claims_of(crash_alice)["jti"]
    assert not [leaf.index for leaf in snapshot.leaves if tag.encode() in leaf.entry]
    assert crash_setup.probe.calls[-1].arguments == arguments and crash_setup.probe.calls[-1].recorded


# Issue 11, finding 7: {"a": 9007199254740993} was recorded as {"unrepresentable": ...} in both modes, and forwarded.

def add_call(tag: str, a: str, request_id: int = 1) -> bytes:
    """A tools/call of `add` whose `a` is the exact JSON number text `a` (never through a float)."""
    return (f'{{"jsonrpc":"2.0","id":{request_id},"method":"tools/call","params":{{"name":"add",'
            f'"arguments":{{"a":{a},"b":1}},"_meta":{{"tag":"{tag}"}}}}}}').encode()


async def post_bytes(deputy: RunningDeputy, token: str, server: str, body: bytes) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json, text/event-stream",
               "Content-Type": "application/json", "MCP-Protocol-Version": "2025-06-18"}
    async with httpx.AsyncClient(timeout=30) as client:
        return await client.post(deputy.resource(server), content=body, headers=headers)


def forwarded_bodies(recorder: RequestRecorder, tag: str) -> list[bytes]:
    return [request.body for request in list(recorder.seen) if tag.encode() in request.body]


async def test_an_integer_beyond_2_53_is_decided_forwarded_and_recorded_exactly(
    setup: AuditSetup, alice_exact: str
) -> None:
    """Cedar decides on 9007199254740993 itself (the policy permits only that value, so 2^53 is denied), the upstream
    gets the bytes as sent, and the record holds those digits, marked as an integer by its pointer."""
    deputy, tag = setup.deputy, marker()
    body = add_call(tag, "9007199254740993")
    response = await post_bytes(deputy, alice_exact, "exact", body)
    succeeded(response)
    assert response.json()["result"]["structuredContent"] == {"result": 9007199254740994}
    assert forwarded_bodies(setup.recorder, tag) == [body]
    control_tag = marker()
    denied = await post_bytes(deputy, alice_exact, "exact", add_call(control_tag, "9007199254740992", 2))
    assert denied.json()["error"]["code"] == POLICY_DENIED, denied.text
    assert forwarded_bodies(setup.recorder, control_tag) == []

    async def logged() -> list[Any]:
        snapshot = await read_log(deputy.database_url)
        found = [leaf.record for leaf in snapshot.decisions(server="exact", tool="add")]
        assert {r["outcome"] for r in found if r["arguments"]["a"] in ("9007199254740993", "9007199254740992")} == \
            {"allow", "deny"}
        return found

    found = await eventually(logged)
    allowed = one([r for r in found if r["outcome"] == "allow" and r["arguments"]["a"] == "9007199254740993"],
                  "allowed decision")
    assert allowed["arguments"] == {"a": "9007199254740993", "b": 1}
    assert allowed["arguments_big_integers"] == ["/a"]
    assert allowed["policies"] == ["exact-add"]
    assert recorded_arguments(allowed) == {"a": 9007199254740993, "b": 1}
    assert json.loads(forwarded_bodies(setup.recorder, tag)[0])["params"]["arguments"] == recorded_arguments(allowed)
    assert setup.probe.calls[-1].recorded
    explained = deputy.cli("policy", "explain", allowed["decision_id"])
    assert explained.returncode == 0, explained.stderr
    assert "9007199254740993" in explained.stdout and "exact-add" in explained.stdout


async def test_digest_mode_digests_an_integer_beyond_2_53_exactly(crash_setup: CrashSetup, crash_alice: str) -> None:
    deputy, tag = crash_setup.deputy, marker()
    body = add_call(tag, "9007199254740993").replace(b'"b":1', b'"b":-9223372036854775808')
    succeeded(await post_bytes(deputy, crash_alice, "plain", body))
    assert forwarded_bodies(crash_setup.recorder, tag) == [body]
    snapshot = await read_log(deputy.database_url)
    digest = hashlib.sha256(b'{"a":"9007199254740993","b":"-9223372036854775808"}').hexdigest()
    decision = one(snapshot.decisions(tool="add", arguments={"sha256": digest}), "decision")
    assert decision.record["arguments_big_integers"] == ["/a", "/b"]
    assert decision.record["outcome"] == "allow"
    assert crash_setup.probe.calls[-1].recorded


async def test_a_call_held_for_approval_with_an_integer_beyond_2_53_is_held_and_recorded(
    setup: AuditSetup, alice: str
) -> None:
    """Held exactly like any other call: an approval to give, the decision recorded exactly, nothing forwarded."""
    deputy, tag = setup.deputy, marker()
    held = await call(deputy, alice, "guarded", "delete_user", {"id": 2**53 + 1, "reason": f"held {tag}"})
    assert held.status_code == 200, held.text
    assert held.json()["error"]["data"]["outcome"] == "approval_required", held.text
    assert forwarded_bodies(setup.recorder, tag) == []
    snapshot = await read_log(deputy.database_url)
    record = one(snapshot.decisions(tool="delete_user", arguments={"id": "9007199254740993", "reason": f"held {tag}"}),
                 "held decision").record
    assert record["arguments_big_integers"] == ["/id"] and record["approval_id"]


@pytest.mark.parametrize("number", ["-0", "-0.0", "1e-400", "0.10000000000000001", "9007199254740993.0", "1e400",
                                    "9223372036854775808"])
async def test_numbers_that_cannot_be_held_exactly_are_refused_before_any_decision(
    setup: AuditSetup, alice_plain: str, number: str
) -> None:
    """Their digits say one number and a double another (or the record cannot tell -0 from 0): -32602 with the id,
    nothing decided, nothing recorded, nothing forwarded."""
    deputy, tag = setup.deputy, marker()
    before = len((await read_log(deputy.database_url)).decisions(server="plain", tool="add"))
    refused = await post_bytes(deputy, alice_plain, "plain", add_call(tag, number, 41))
    assert refused.status_code == 400, refused.text
    error = refused.json()
    assert error["id"] == 41 and error["error"]["code"] == -32602, refused.text
    assert error["error"]["message"].startswith("the number at /params/arguments/a ")
    assert forwarded_bodies(setup.recorder, tag) == []
    # A later call's record is a barrier: a record of the refused one would be before it.
    barrier = {"text": f"barrier {tag}"}
    succeeded(await call(deputy, alice_plain, "plain", "echo", barrier))
    snapshot = await read_log(deputy.database_url)
    one(snapshot.decisions(tool="echo", arguments=barrier), "barrier decision")
    assert len(snapshot.decisions(server="plain", tool="add")) == before


async def test_unwritable_audit_storage_refuses_calls_and_forwards_nothing(
    setup: AuditSetup, alice: str, alice_plain: str
) -> None:
    deputy, tag = setup.deputy, marker()
    arguments = {"text": f"blocked {tag}"}
    before, calls_before = len(setup.recorder.seen), len(forwarded_calls(setup.recorder))
    await block_audit_writes(deputy.database_url)
    try:
        for token, server in ((alice, "guarded"), (alice_plain, "plain")):
            refused = await call(deputy, token, server, "echo", arguments, request_id=41)
            assert refused.status_code == 503, refused.text
            assert refused.headers["retry-after"] == "5"
            error = refused.json()
            assert error["id"] == 41 and error["error"]["code"] == JSONRPC_INTERNAL_ERROR, error
            assert "audit log" in error["error"]["message"], error
        assert len(setup.recorder.seen) == before
        snapshot = await read_log(deputy.database_url)
        assert snapshot.decisions(arguments=arguments) == []
    finally:
        await unblock_audit_writes(deputy.database_url)
    succeeded(await call(deputy, alice, "guarded", "echo", arguments))
    assert forwarded_calls(setup.recorder)[calls_before:] == [("echo", arguments)]
    assert setup.probe.calls[-1].recorded

    async def verified() -> None:
        snapshot = await read_log(deputy.database_url)
        assert one(snapshot.decisions(arguments=arguments), "decision").record["outcome"] == "allow"
        verify_log(snapshot, log_verifier(deputy.data_dir))
        assert snapshot.checkpoints and snapshot.checkpoints[-1].size == len(snapshot.leaves)

    await eventually(verified)


async def test_a_killed_deputy_loses_no_record_of_a_forwarded_call(crash_setup: CrashSetup, crash_alice: str) -> None:
    """Eight clients call `echo` until Deputy is SIGKILLed; restarted on the same database, the log verifies
    and every call the upstream received has its `decision`."""
    deputy = crash_setup.deputy
    tag = marker()
    answered: list[str] = []

    async def client(n: int) -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            for i in range(100_000):
                text = f"crash {tag} {n} {i}"
                try:
                    response = await call(deputy, crash_alice, "plain", "echo", {"text": text}, http=http)
                except httpx.HTTPError:
                    return  # Deputy is gone
                assert response.status_code == 200, response.text
                answered.append(text)

    def forwarded() -> list[str]:
        return [
            args["text"]
            for tool, args in forwarded_calls(crash_setup.recorder)
            if tool == "echo" and args["text"].startswith(f"crash {tag} ")
        ]

    clients = [asyncio.create_task(client(n)) for n in range(8)]
    started = time.monotonic()
    while time.monotonic() - started < 1.5 or len(forwarded()) < 40:
        assert time.monotonic() - started < 20, f"only {len(forwarded())} calls forwarded"
        assert not any(task.done() for task in clients), [task.exception() for task in clients if task.done()]
        await asyncio.sleep(0.05)
    crash_setup.killable.kill()
    await asyncio.wait_for(asyncio.gather(*clients), 20)
    received = forwarded()
    assert len(received) >= 40 and len(set(received)) == len(received)
    assert set(answered) <= set(received)

    await asyncio.to_thread(crash_setup.killable.start)
    verifier = log_verifier(deputy.data_dir)
    snapshot = await read_log(deputy.database_url)
    verify_log(snapshot, verifier)
    recorded = Counter(
        rfc8785.dumps(leaf.record["arguments"])
        for leaf in snapshot.decisions(tool="echo", outcome="allow", server="plain")
    )
    missing = [text for text in received if recorded[rfc8785.dumps(arguments_digest({"text": text}))] != 1]
    assert missing == [], f"{len(missing)} forwarded calls have no decision record"
    crashed = [c for c in crash_setup.probe.calls if str(c.arguments.get("text", "")).startswith(f"crash {tag}")]
    assert len(crashed) == len(received) and all(c.recorded for c in crashed)

    # The restarted Deputy goes on with the same log: it takes calls, appends after the old leaves and signs
    # a checkpoint over all of them that agrees with the recomputed tree.
    after = {"text": f"after {tag}"}
    succeeded(await call(deputy, crash_alice, "plain", "echo", after))

    async def checkpointed() -> None:
        later = await read_log(deputy.database_url)
        verify_log(later, verifier)
        decision = one(later.decisions(tool="echo", arguments=arguments_digest(after)), "decision")
        assert decision.index >= len(snapshot.leaves)
        assert later.leaves[: len(snapshot.leaves)] == snapshot.leaves
        assert later.checkpoints[-1].size == len(later.leaves)

    await eventually(checkpointed)


async def test_approvals_and_revocations_are_recorded(setup: AuditSetup, alice: str) -> None:
    deputy, tag = setup.deputy, marker()
    arguments = {"id": 100 + int(tag[:6], 16), "reason": f"audited {tag}"}
    held = (await call(deputy, alice, "guarded", "delete_user", arguments)).json()["error"]["data"]
    assert held["outcome"] == "approval_required", held
    token, _ = await tokens_for_alice(
        deputy,
        deputy.resource("guarded"),
        client_id=CONFIDENTIAL_CLIENT,
        basic=(CONFIDENTIAL_CLIENT, CONFIDENTIAL_SECRET),
    )
    jti = claims_of(token)["jti"]
    # Two independent CLI commands, run together (each is a Python start-up).
    decided, revoked = await asyncio.gather(
        asyncio.to_thread(deputy.cli, "approvals", "approve", held["approval_id"], "--as", "bob"),
        asyncio.to_thread(deputy.cli, "consents", "revoke", "--user", "alice", "--client", CONFIDENTIAL_CLIENT),
    )
    assert decided.returncode == 0, decided.stderr
    assert revoked.returncode == 0, revoked.stderr
    proceeded = await call(deputy, alice, "guarded", "delete_user", arguments, request_id=2)
    succeeded(proceeded)

    snapshot = await read_log(deputy.database_url)
    alice_id, bob_id = await user_id(deputy.database_url, "alice"), await user_id(deputy.database_url, "bob")
    asked = one(snapshot.decisions(arguments=arguments, outcome="approval_required"), "held decision")
    assert asked.record["approval_id"] == held["approval_id"]
    assert asked.record["policies"] == ["demo-delete-needs-approval"]
    approval = one(
        [leaf for leaf in snapshot.of_type("approval.decided") if leaf.record["approval_id"] == held["approval_id"]],
        "approval.decided",
    )
    assert approval.index > asked.index
    assert approval.record["status"] == "approved" and approval.record["by"] == bob_id
    assert approval.record["user"] == alice_id and approval.record["agent"] == PUBLIC_CLIENT
    assert approval.record["server"] == "guarded" and approval.record["tool"] == "delete_user"
    assert approval.record["decision_id"] == held["decision_id"] == asked.record["decision_id"]
    used = one(snapshot.decisions(arguments=arguments, outcome="allow"), "allowed decision")
    assert used.index > approval.index and used.record["approval_id"] == held["approval_id"]
    snapshot = await read_log(deputy.database_url)
    issued = one([leaf for leaf in snapshot.of_type("token.issued") if leaf.record["jti"] == jti], "token.issued")
    consent = one(
        [leaf for leaf in snapshot.of_type("consent.revoked") if leaf.record["client_id"] == CONFIDENTIAL_CLIENT],
        "consent.revoked",
    )
    assert consent.record["user"] == alice_id and consent.record["by"] == "cli"
    assert consent.record["consents"] >= 1 and consent.record["grants_revoked"] >= 1
    token_revoked = one(
        [leaf for leaf in snapshot.of_type("token.revoked") if leaf.record["grant_id"] == issued.record["grant_id"]],
        "token.revoked",
    )
    assert token_revoked.record["reason"] == "consent_revoked"
    assert issued.index < token_revoked.index and issued.index < consent.index
    verify_log(snapshot, log_verifier(deputy.data_dir))
