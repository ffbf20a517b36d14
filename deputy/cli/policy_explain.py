"""``deputy policy explain DECISION_ID``: why a call was allowed or refused, from the audit log.

Every decision the gateway makes is an audit record (:mod:`deputy.gateway.audit_stage`):
who asked (user — with the attributes policy saw, ``context.user`` — agent, the ordered actor chain, task,
token), what (server, method, tool,
arguments as stored), and the answer (outcome, the policies that determined it, the
policy-set and schema versions, errors). This command finds that record — newest records
first, since the decisions people ask about are recent — and prints it with the text and
``file:line:col`` of each deciding policy as the server's policy directory holds it now,
saying so when the policy set has changed since the decision (its version is the content
hash of the files). The call's outcome record, when there is one, says what came back.

Exit codes: 0 found; 1 no decision with that id in the log.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Column, Table

from deputy.cli.common import ConfigOption, console, err, settings_or_exit, with_services
from deputy.cli.terminal_text import line, shown
from deputy.services import Services

if TYPE_CHECKING:
    from deputy.config import Settings
    from deputy.policy import PolicySource

SEARCH_BATCH = 5_000


Found = tuple[int, Mapping[str, Any], Mapping[str, Any] | None]


async def find_decision(services: Services, decision_id: str) -> Found:
    """The decision record with ``decision_id`` (its index) and its call outcome, searching newest first."""
    from deputy.audit.records import RecordError, parse_record

    needle = f'"decision_id":"{decision_id}"'.encode()
    end = await services.audit.size()
    decision: tuple[int, Mapping[str, Any]] | None = None
    outcome: Mapping[str, Any] | None = None
    while end > 0 and decision is None:
        start = max(0, end - SEARCH_BATCH)
        async for index, entry in services.audit.leaves(start, end):
            if needle not in entry:  # cheap: most records are about other decisions
                continue
            try:
                record = parse_record(entry)
            except RecordError:
                continue
            if record.get("decision_id") != decision_id:
                continue
            if record["type"] == "decision":
                decision = (index, record)
            elif record["type"] == "call.outcome":
                outcome = record
        end = start
    if decision is None:
        raise LookupError(decision_id)
    if outcome is None:  # the outcome comes after its decision: look just past it
        async for _index, entry in services.audit.leaves(decision[0] + 1, decision[0] + 1 + SEARCH_BATCH):
            if needle in entry and (record := parse_record(entry))["type"] == "call.outcome":
                outcome = record
                break
    return decision[0], decision[1], outcome


def _current_policies(settings: Settings, server: str) -> tuple[str | None, dict[str, PolicySource]]:
    """The server's policy-set version and policies as its directory holds them now."""
    from deputy.policy import PolicyLoadError
    from deputy.policy.sources import parse_policy_files, policy_set_version, read_policy_files

    config = settings.servers.get(server)
    if config is None or config.policies is None:
        return None, {}
    try:
        files = read_policy_files(config.policies)
        return policy_set_version(files), {s.policy_id: s for s in parse_policy_files(files)}
    except PolicyLoadError:
        return None, {}


def _when(milliseconds: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(milliseconds / 1000)) + f".{milliseconds % 1000:03d}Z"


def explain(decision_id: Annotated[str, typer.Argument(metavar="DECISION_ID")], config: ConfigOption = None) -> None:
    """Explain one decision: who asked for what, the answer, and the policies that determined it."""
    settings = settings_or_exit(config)

    async def work(services: Services) -> Found | None:
        try:
            return await find_decision(services, decision_id)
        except LookupError:
            return None

    found = with_services(settings, work)
    if found is None:
        err.print(line("no decision ", decision_id, " in the audit log", style="red"))
        raise typer.Exit(1)
    index, record, outcome = found
    # Every field of the record is someone's words (the agent's tool and arguments, the client's id, the
    # upstream's errors): each is shown, never parsed as markup, and acting characters become escapes.
    chain = " → ".join(str(a.get("client_id") or a.get("sub")) for a in record.get("actors") or [])
    table = Table(Column("", style="bold", no_wrap=True), Column("", overflow="fold"), show_header=False, box=None)
    table.add_row("decision", line(decision_id, f" (audit log index {index})"))
    table.add_row("outcome", shown(record["outcome"], "green" if record["outcome"] == "allow" else "red"))
    table.add_row("when", _when(int(record["time"])))
    table.add_row("user", shown(record.get("user")))
    attributes = record.get("user_attributes")
    if isinstance(attributes, dict):  # what policy saw of her (context.user), as her token carried it
        table.add_row("user as policy saw her", shown(json.dumps(attributes, ensure_ascii=False, sort_keys=True)))
    table.add_row("agent", line(record.get("agent"), *((" (chain, current first: ", chain, ")") if chain else ())))
    if record.get("txn"):
        table.add_row("task (txn)", shown(record["txn"]))
    table.add_row("token (jti)", shown(record.get("jti")))
    table.add_row("call", line(record.get("method"), " ", record.get("tool"), " on ", record.get("server")))
    table.add_row("arguments", shown(json.dumps(record.get("arguments"), ensure_ascii=False, sort_keys=True)))
    if record.get("approval_id"):
        table.add_row("approval", shown(record["approval_id"]))
    for error in record.get("errors") or []:
        table.add_row("error", shown(error))
    version = record.get("policy_version")
    current_version, current = _current_policies(settings, str(record.get("server")))
    if version is None:
        table.add_row("policies", "none: the server had no policies, or no decision could be made")
    else:
        same = version == current_version
        table.add_row("policy set", line(f"{str(version)[:16]}… ", shown("(still the active files)") if same else
                                         shown("(the files have changed since; the text below is today's)", "yellow")))
    if outcome is not None:
        table.add_row("answer", shown(f"HTTP {outcome.get('status')}, {outcome.get('response_bytes')} bytes, "
                                      f"sha256 {str(outcome.get('response_sha256'))[:16]}…, "
                                      f"{int(outcome.get('duration_us') or 0) / 1000:.1f} ms"))
    console.print(table, soft_wrap=True)
    determining = record.get("policies") or []
    if determining:
        console.print("\n[bold]determined by[/bold]")
    for policy_id in determining:
        source = current.get(policy_id)
        if source is None:
            console.print(line("  ", policy_id, shown(" (not in today's policy files)", "yellow")))
            continue
        console.print(line("  ", policy_id, "  ", source.file, f":{source.line}:{source.column}"))
        for text in source.text.strip().splitlines():
            console.print(line("    ", text))
