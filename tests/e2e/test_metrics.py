"""``/metrics`` of a running ``deputy serve`` (issue 13), scraped while tokens are issued and tools called.

Abuse first: the public port serves no metrics; no user, client id, secret, token or argument value reaches the
exposition, whatever the calls carried; a client's made-up grant types add no series; an address that is taken
stops start-up with a line naming ``metrics.listen``. Then the counters and histograms move by what was done,
on both backends, each scrape parsed by prometheus-client's own parser while the calls run.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import os
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from deputy.oauth.errors import OAuthError
from tests.support.agents import (
    JWT_AGENT,
    POST_AGENT,
    SECRET_AGENT,
    SECRET_AGENT_SECRET,
    agents_config,
    client_credentials,
)
from tests.support.audit_log import block_audit_writes, unblock_audit_writes
from tests.support.databases import database_url
from tests.support.demo_policies import DEMO_POLICIES
from tests.support.deputy_process import (
    CONFIDENTIAL_CLIENT,
    CONFIDENTIAL_SECRET,
    PASSWORD,
    PUBLIC_CLIENT,
    RunningDeputy,
    running_deputy,
    write_config,
)
from tests.support.forked_deputy import run_deputy
from tests.support.oauth_flow import mcp_post, post_token, refresh, tokens_for_alice
from tests.support.sdk_client import free_port

MARKER = "zq-metrics-marker-7c1e"  # in arguments, grant types and client ids: never in a label
GRANT_LABELS = {"authorization_code", "refresh_token", "client_credentials", "token_exchange", "jwt_bearer", "other"}
PROTOCOL = {"MCP-Protocol-Version": "2025-06-18"}


def _all_codes() -> set[str]:
    found: set[str] = set()
    pending: list[type[OAuthError]] = [OAuthError]
    while pending:
        cls = pending.pop()
        found.add(cls.code)
        pending.extend(cls.__subclasses__())
    return found


@dataclass(frozen=True)
class Metered:
    deputy: RunningDeputy
    metrics_url: str


@pytest.fixture(scope="module")
def metered(backend: str, upstream_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Metered]:
    """The agents of tests.support.agents, and a server whose `delete_user` calls with an id ≥ 100 are held for
    a human approval (the demo policies)."""
    directory: Path = tmp_path_factory.mktemp(f"deputy-metrics-{backend}")
    port = free_port()
    extra = agents_config(directory) + f'''
[servers.guarded]
url = "{upstream_url}"
scopes = ["demo:tools", "demo:admin"]
policies = "{DEMO_POLICIES}"

[metrics]
listen = "127.0.0.1:{port}"
'''
    with database_url(backend, directory) as url, running_deputy(directory, url, upstream_url, extra) as running:
        added = running.cli("users", "add", "bob", "--password", "bob's own long passphrase")
        assert added.returncode == 0, added.stderr
        yield Metered(running, f"http://127.0.0.1:{port}/metrics")


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(metered: Metered, http: httpx.AsyncClient, **headers: str) -> Samples:
    """Every sample of one scrape, parsed by prometheus-client's own parser."""
    answer = await http.get(metered.metrics_url, headers=headers)
    assert answer.status_code == 200
    return {(s.name, tuple(sorted(s.labels.items()))): float(s.value)
            for family in text_string_to_metric_families(answer.text) for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


async def open_session(deputy: RunningDeputy, token: str) -> dict[str, str]:
    opened = await mcp_post(deputy, token)
    assert opened.status_code == 200, opened.text
    headers = {"Mcp-Session-Id": opened.headers["mcp-session-id"], **PROTOCOL}
    initialized = await mcp_post(deputy, token, headers=headers,
                                 body={"jsonrpc": "2.0", "method": "notifications/initialized"})
    assert initialized.status_code == 202
    return headers


async def call_echo(deputy: RunningDeputy, token: str, headers: dict[str, str], text: str) -> None:
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "echo", "arguments": {"text": text}}}
    answer = await mcp_post(deputy, token, headers=headers, body=call)
    assert answer.status_code == 200, answer.text
    assert text in answer.text


async def secret_agent_token(deputy: RunningDeputy) -> str:
    answer = await client_credentials(deputy, basic=(SECRET_AGENT, SECRET_AGENT_SECRET))
    assert answer.status_code == 200, answer.text
    token: str = answer.json()["access_token"]
    return token


# Abuse.


async def test_the_public_port_serves_no_metrics(metered: Metered) -> None:
    async with httpx.AsyncClient() as http:
        public = await http.get(f"{metered.deputy.url}/metrics")
        other = await http.get(metered.metrics_url.replace("/metrics", "/healthz"))
    assert public.status_code == 404 and "deputy_" not in public.text
    assert other.status_code == 404


async def test_no_identity_secret_token_or_argument_reaches_the_exposition(metered: Metered) -> None:
    deputy = metered.deputy
    agent_token = await secret_agent_token(deputy)
    refused = await client_credentials(deputy, basic=(SECRET_AGENT, f"wrong-{MARKER}"))
    assert refused.status_code == 401
    made_up = await post_token(deputy, [("grant_type", f"urn:{MARKER}"), ("client_id", f"client-{MARKER}")])
    assert made_up.status_code == 400
    access, refresh_token = await tokens_for_alice(deputy, client_id=CONFIDENTIAL_CLIENT,
                                                   basic=(CONFIDENTIAL_CLIENT, CONFIDENTIAL_SECRET))
    for token in (agent_token, access):
        await call_echo(deputy, token, await open_session(deputy, token), f"argument-{MARKER}")
    refreshed = await refresh(deputy, refresh_token, basic=(CONFIDENTIAL_CLIENT, CONFIDENTIAL_SECRET))
    assert refreshed.status_code == 200, refreshed.text
    replayed = await refresh(deputy, refresh_token, basic=(CONFIDENTIAL_CLIENT, CONFIDENTIAL_SECRET))
    assert replayed.status_code == 400  # reuse: the family is revoked (and counted as invalid_grant)

    secrets = [MARKER, SECRET_AGENT, SECRET_AGENT_SECRET, CONFIDENTIAL_CLIENT, CONFIDENTIAL_SECRET, PUBLIC_CLIENT,
               JWT_AGENT, POST_AGENT, "alice", PASSWORD, agent_token, access, refresh_token,
               refreshed.json()["access_token"], refreshed.json()["refresh_token"]]
    secrets += [part for token in (agent_token, access) for part in token.split(".")]  # header, claims, signature
    async with httpx.AsyncClient() as http:
        expositions = [
            (await http.get(metered.metrics_url)).text,
            (await http.get(metered.metrics_url,
                            headers={"Accept": "application/openmetrics-text; version=1.0.0"})).text,
        ]
    for text in expositions:
        for secret in secrets:
            assert secret not in text, f"{secret[:24]}… is in the exposition"
    # Every label of the token metrics is of its closed set.
    codes = _all_codes()
    samples = (s for f in text_string_to_metric_families(expositions[0]) for s in f.samples)
    for sample in samples:
        if sample.name.startswith("deputy_token"):
            assert sample.labels["grant_type"] in GRANT_LABELS, sample
            assert sample.labels.get("error", "invalid_request") in codes, sample


async def test_made_up_grant_types_add_no_series(metered: Metered) -> None:
    async with httpx.AsyncClient() as http:
        before = await scrape(metered, http)
        for _ in range(30):
            answer = await post_token(metered.deputy, [("grant_type", f"urn:{uuid.uuid4().hex}")])
            assert answer.status_code == 400 and answer.json()["error"] == "unsupported_grant_type"
        no_grant = await post_token(metered.deputy, [("client_id", PUBLIC_CLIENT)])
        assert no_grant.json()["error"] == "invalid_request"
        after = await scrape(metered, http)
    new_series = {key for key in after if key not in before}
    assert {name for name, _ in new_series} <= {"deputy_token_refusals_total"}
    assert len(new_series) <= 2
    assert value(after, "deputy_token_refusals_total", grant_type="other", error="unsupported_grant_type") \
        - value(before, "deputy_token_refusals_total", grant_type="other", error="unsupported_grant_type") == 30
    assert value(after, "deputy_token_refusals_total", grant_type="other", error="invalid_request") \
        - value(before, "deputy_token_refusals_total", grant_type="other", error="invalid_request") == 1


@pytest.mark.parametrize("problem", ["taken", "public"])
def test_deputy_serve_refuses_to_start(tmp_path: Path, upstream_url: str, problem: str) -> None:
    """A metrics address in use, or the public one: `deputy serve` exits, saying which setting and why."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = free_port()
        metrics_port = taken.getsockname()[1] if problem == "taken" else port
        config = tmp_path / "deputy.toml"
        write_config(config, port, upstream_url, f'\n[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n')
        env = {**os.environ, "DEPUTY_CONFIG": str(config), "DEPUTY_DATA_DIR": str(tmp_path / "data"),
               "DEPUTY_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'deputy.db'}"}
        served = run_deputy(["serve"], env, timeout=120)
    assert served.returncode != 0
    output = served.stdout + served.stderr
    if problem == "taken":
        assert f"metrics.listen 127.0.0.1:{metrics_port}: cannot listen" in output
    else:
        assert "metrics.listen" in output and "public listener" in output


# What the scrape shows.


async def test_counters_move_while_scraped_during_calls(metered: Metered) -> None:
    deputy = metered.deputy
    agent_token = await secret_agent_token(deputy)
    session = await open_session(deputy, agent_token)
    done = asyncio.Event()
    scrapes: list[Samples] = []

    async def scraper(http: httpx.AsyncClient) -> None:
        while not done.is_set():
            scrapes.append(await scrape(metered, http))
        scrapes.append(await scrape(metered, http))

    async def issue(n: int) -> None:
        for _ in range(n):
            await secret_agent_token(deputy)

    async def refuse(n: int) -> None:
        for _ in range(n):
            assert (await client_credentials(deputy, basic=(SECRET_AGENT, "wrong"))).status_code == 401

    async def code_flows(n: int) -> None:
        for _ in range(n):
            await tokens_for_alice(deputy)

    async def calls(n: int) -> None:
        for i in range(n):
            await call_echo(deputy, agent_token, session, f"call {i}")

    async with httpx.AsyncClient() as http:
        before = await scrape(metered, http)
        watching = asyncio.create_task(scraper(http))
        try:
            await asyncio.gather(issue(12), refuse(5), code_flows(2), calls(10))
        finally:
            done.set()
            await watching
    after = scrapes[-1]
    assert len(scrapes) >= 2

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("deputy_tokens_issued_total", grant_type="client_credentials") == 12
    assert moved("deputy_tokens_issued_total", grant_type="authorization_code") == 2
    assert moved("deputy_token_refusals_total", grant_type="client_credentials", error="invalid_client") == 5
    # 14 tokens issued and 10 calls, each at least one audit record, in batches of one or more.
    assert moved("deputy_audit_append_batch_records_sum") >= 24
    batches = moved("deputy_audit_append_batch_records_count")
    assert batches >= 1
    assert moved("deputy_audit_append_batch_records_sum") >= batches  # no batch commits without a record
    assert moved("deputy_audit_commit_duration_seconds_count") == moved("deputy_audit_append_batch_records_count")
    assert value(after, "deputy_audit_commit_failures_total") == 0
    # Counters and histogram counts never go back between two scrapes taken during the calls.
    for earlier, later in itertools.pairwise(scrapes):
        for key, count in earlier.items():
            if key[0].endswith(("_total", "_count", "_bucket")):
                assert later.get(key, 0.0) >= count, key
    # The gauges read at scrape time are numbers; the pending approvals were counted at start.
    assert value(after, "deputy_audit_queue_depth") >= 0
    assert 0 <= value(after, "deputy_revocation_staleness_seconds") < math.inf
    assert value(after, "deputy_approvals_pending") == 0


async def test_an_audit_log_that_cannot_be_written_shows_as_failed_commits_and_refusals(metered: Metered) -> None:
    """No record, no token (the issue is recorded first): the refusal is counted as the 503 it was answered."""
    deputy = metered.deputy
    async with httpx.AsyncClient() as http:
        before = await scrape(metered, http)
        await block_audit_writes(deputy.database_url)
        try:
            refused = await client_credentials(deputy, basic=(SECRET_AGENT, SECRET_AGENT_SECRET))
            during = await scrape(metered, http)  # the scrape itself needs no database
        finally:
            await unblock_audit_writes(deputy.database_url)
        await secret_agent_token(deputy)  # writable again
        after = await scrape(metered, http)
    assert refused.status_code == 503 and refused.json()["error"] == "temporarily_unavailable"

    def moved(samples: Samples, name: str, **labels: str) -> float:
        return value(samples, name, **labels) - value(before, name, **labels)

    assert moved(during, "deputy_token_refusals_total", grant_type="client_credentials",
                 error="temporarily_unavailable") == 1
    assert moved(during, "deputy_audit_commit_failures_total") >= 1
    assert moved(during, "deputy_tokens_issued_total", grant_type="client_credentials") == 0
    assert moved(after, "deputy_tokens_issued_total", grant_type="client_credentials") == 1


async def test_a_held_call_is_counted_as_pending_until_decided(metered: Metered) -> None:
    deputy = metered.deputy
    token, _ = await tokens_for_alice(deputy, deputy.resource("guarded"))
    call = {"jsonrpc": "2.0", "id": 1, "method": "tools/call",
            "params": {"name": "delete_user", "arguments": {"id": 4242, "reason": f"metrics {uuid.uuid4().hex}"}}}
    async with httpx.AsyncClient() as http:
        pending_before = value(await scrape(metered, http), "deputy_approvals_pending")
        held = await mcp_post(deputy, token, server="guarded", body=call, headers=PROTOCOL)
        assert held.json()["error"]["data"]["outcome"] == "approval_required", held.text
        approval_id = held.json()["error"]["data"]["approval_id"]
        # The count is read in the background at most every 5 s: wait for a scrape that shows it.
        pending = await _scrape_until(metered, http, lambda s: value(s, "deputy_approvals_pending") != pending_before)
        assert value(pending, "deputy_approvals_pending") == pending_before + 1
        denied = deputy.cli("approvals", "deny", approval_id, "--as", "bob")
        assert denied.returncode == 0, denied.stderr
        await _scrape_until(metered, http, lambda s: value(s, "deputy_approvals_pending") == pending_before)


async def _scrape_until(metered: Metered, http: httpx.AsyncClient, condition: Callable[[Samples], bool]) -> Samples:
    for _ in range(300):
        samples = await scrape(metered, http)
        if condition(samples):
            return samples
        await asyncio.sleep(0.1)
    raise AssertionError("no scrape met the condition within 30 s")


async def test_the_checkpoint_age_is_read_once_a_checkpoint_is_signed(metered: Metered) -> None:
    await secret_agent_token(metered.deputy)  # a record to sign
    async with httpx.AsyncClient() as http:
        for _ in range(600):  # the checkpointer signs within checkpoint_interval_ms (1 s) of the record
            age = value(await scrape(metered, http), "deputy_audit_checkpoint_age_seconds")
            if not math.isnan(age):
                break
            await asyncio.sleep(0.05)
    assert age >= 0
