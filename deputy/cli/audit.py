"""``deputy audit``: verify the audit log, prove records offline, follow it, export it, publish its key.

- ``verify`` checks the log relative to anchors the auditor trusts (:mod:`deputy.cli.audit_verify`);
  ``checkpoint`` prints the latest signed checkpoint to keep as one (:mod:`deputy.cli.audit_keys`).
- ``prove N`` prints a C2SP tlog-proof for record N; ``check-proof FILE --key VKEY`` checks one offline.
- ``consistency A B`` prints (and checks) the proof that checkpoint A is a prefix of checkpoint B.
- ``tail`` prints the latest records as lines (``-f`` follows), filtered by user, agent, tool, outcome or txn.
- ``export --format jsonl`` streams the log as JSON Lines (see :mod:`deputy.audit.export`).
- ``key`` prints the log's verifier key, which is all anyone needs to verify an export or a proof; ``key rotate``
  hands the log over to a new key (:mod:`deputy.cli.audit_keys`).
"""

from __future__ import annotations

import asyncio
import datetime
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from deputy import bounded_json
from deputy.cli.audit_common import QuorumOption, WitnessOption, log_key, run, witness_keys
from deputy.cli.audit_keys import checkpoint, key_app
from deputy.cli.audit_verify import verify
from deputy.cli.common import ConfigOption, console, err
from deputy.cli.small_input import PROOF_BYTES, PROOF_LINES, read_small
from deputy.cli.terminal_text import line, shown, shown_json

if TYPE_CHECKING:
    from deputy.audit.log import AuditLog
    from deputy.audit.note import NoteVerifier

audit_app = typer.Typer(help="The tamper-evident audit log: verify, prove, tail, export.", no_args_is_help=True)

audit_app.command("verify")(verify)
audit_app.command("checkpoint")(checkpoint)
audit_app.add_typer(key_app, name="key")


@audit_app.command("prove")
def prove(
    index: Annotated[int, typer.Argument(help="the record's index in the log")],
    config: ConfigOption = None,
    size: Annotated[int | None, typer.Option(help="prove against this checkpoint (default: the latest)")] = None,
) -> None:
    """Print a C2SP tlog-proof of one record (the record, its inclusion path, the signed checkpoint)."""
    from deputy.audit.bundle import BundleError, make_bundle

    async def work(log: AuditLog) -> str:
        return (await make_bundle(log, index, size)).text()

    try:
        sys.stdout.write(run(config, work))
    except BundleError as exc:
        err.print(line(str(exc), style="red"))
        raise typer.Exit(1) from None


@audit_app.command("check-proof")
def check_proof(
    file: Annotated[Path, typer.Argument(help="a tlog-proof (from deputy audit prove)")],
    key: Annotated[str, typer.Option("--key", help="the log's vkey")],
    witness: WitnessOption = None,
    quorum: QuorumOption = None,
) -> None:
    """Check a record's proof offline: record, log signature, witness cosignatures, inclusion."""
    from deputy.audit.bundle import BundleError, check_bundle

    witnesses = [w for _, w in witness_keys(witness, quorum)]
    try:
        text = read_small(file, PROOF_BYTES, PROOF_LINES, what="a tlog-proof")  # refused before it is read whole
    except (OSError, UnicodeDecodeError) as exc:
        err.print(f"[red]cannot read {file}: {exc}[/red]")
        raise typer.Exit(2) from None
    try:
        checked = check_bundle(text, log_key(key), witnesses, len(witnesses) if quorum is None else quorum)
    except BundleError as exc:
        console.print(line("proof FAILED: ", str(exc), style="red"), soft_wrap=True)
        raise typer.Exit(1) from None
    record = checked.record
    cosigned = f", cosigned by {', '.join(checked.cosigners)}" if checked.cosigners else ""
    # The record, its origin and the cosigners' names come from the proof file: shown, never markup.
    console.print(
        line(shown("proof OK", "green"), f": record {checked.index} (", record.get("type"), " ", record.get("id"),
             f") is in checkpoint {checked.checkpoint.size} of ", checked.checkpoint.origin, cosigned),
        soft_wrap=True,
    )
    console.print(shown_json(dict(record)))


@audit_app.command("consistency")
def consistency_cmd(
    size_a: Annotated[int, typer.Argument(help="the older checkpoint's size")],
    size_b: Annotated[int, typer.Argument(help="the newer checkpoint's size")],
    config: ConfigOption = None,
) -> None:
    """Print the proof that checkpoint A is a prefix of checkpoint B, and check it with the log's key."""
    from deputy.audit.bundle import BundleError, check_consistency, consistency

    async def work(log: AuditLog) -> tuple[str, NoteVerifier]:
        return (await consistency(log, size_a, size_b)).text(), log.verifier

    try:
        text, verifier = run(config, work)
        old, new = check_consistency(text, verifier)
    except BundleError as exc:
        err.print(line(str(exc), style="red"))
        raise typer.Exit(1) from None
    sys.stdout.write(text)
    err.print(f"[green]consistent[/green]: checkpoint {old.size} is a prefix of checkpoint {new.size}")


def _fields(record: Mapping[str, Any]) -> dict[str, str]:
    def first(*names: str) -> str:
        for name in names:
            value = record.get(name)
            if value not in (None, ""):
                return str(value)
        return ""

    return {
        "user": first("user", "sub"),
        "agent": first("agent", "client_id"),
        "tool": first("tool"),
        "outcome": first("outcome", "status"),
        "decision": first("decision_id"),
        "txn": first("txn"),
        "trace": first("trace_id"),  # W3C trace id of a call's decision and outcome (README, Traces)
    }


def _line(index: int, record: Mapping[str, Any]) -> str:
    fields = _fields(record)
    when = record.get("time")
    stamp = (
        datetime.datetime.fromtimestamp(when / 1000, datetime.UTC).isoformat(timespec="milliseconds")
        if isinstance(when, int)
        else "?"
    )
    shown = "  ".join(f"{k}={v}" for k, v in fields.items() if v and k != "txn")
    return f"{stamp}  #{index:<8} {record.get('type')!s:<16} {shown}"


@audit_app.command("tail")
def tail(
    config: ConfigOption = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing new records")] = False,
    lines: Annotated[int, typer.Option("-n", help="how many of the latest records to print first")] = 20,
    user: Annotated[str | None, typer.Option(help="only this user (user or sub)")] = None,
    agent: Annotated[str | None, typer.Option(help="only this agent (agent or client_id)")] = None,
    tool: Annotated[str | None, typer.Option(help="only this tool")] = None,
    decision: Annotated[str | None, typer.Option(help="only decisions with this outcome")] = None,
    txn: Annotated[str | None, typer.Option(help="only this transaction id")] = None,
    trace: Annotated[str | None, typer.Option(help="only records of calls in this W3C trace (32 hex)")] = None,
    interval: Annotated[float, typer.Option(help="seconds between polls with -f")] = 1.0,
) -> None:
    """Print the latest records, one line each: time, index, type, user, agent, tool, outcome, decision id."""
    from sqlalchemy import select

    from deputy.storage.tables import audit_leaves

    wanted = {
        k: v
        for k, v in {"user": user, "agent": agent, "tool": tool, "outcome": decision, "txn": txn,
                     "trace": trace}.items()
        if v is not None
    }

    def matches(record: Mapping[str, Any]) -> bool:
        fields = _fields(record)
        return all(fields[k] == v for k, v in wanted.items())

    def show(index: int, entry: bytes) -> bool:
        try:
            record = bounded_json.loads(entry)
        except ValueError:  # bounded_json.TooDeep included
            return False
        if not isinstance(record, dict) or not matches(record):
            return False
        console.print(shown(_line(index, record)), soft_wrap=True)  # every field is someone's words
        return True

    async def work(log: AuditLog) -> None:
        # The latest matching records, read backwards in batches.
        found: list[tuple[int, bytes]] = []
        before = await log.size()
        end = before
        while len(found) < lines and before > 0:
            async with log.engine.connect() as conn:
                rows = (
                    await conn.execute(
                        select(audit_leaves.c.idx, audit_leaves.c.record)
                        .where(audit_leaves.c.idx < before)
                        .order_by(audit_leaves.c.idx.desc())
                        .limit(1000)
                    )
                ).all()
            if not rows:
                break
            for row in rows:
                entry = bytes(row.record)
                try:
                    record = bounded_json.loads(entry)
                except ValueError:  # not a record (bounded_json.TooDeep included): show() skips it too
                    continue
                if isinstance(record, dict) and matches(record):
                    found.append((int(row.idx), entry))
                    if len(found) == lines:
                        break
            before = int(rows[-1].idx)
        for index, entry in reversed(found):
            show(index, entry)
        position = end
        while follow:
            await asyncio.sleep(interval)
            async for index, entry in log.leaves(position):
                show(index, entry)
                position = index + 1

    try:
        run(config, work)
    except KeyboardInterrupt:
        return


@audit_app.command("export")
def export(
    config: ConfigOption = None,
    format_: Annotated[str, typer.Option("--format", help="only jsonl")] = "jsonl",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="file to write (default: stdout)")] = None,
) -> None:
    """Stream the whole log as JSON Lines: header, records, signed checkpoints with consistency proofs."""
    from deputy.audit.export import export_jsonl

    if format_ != "jsonl":
        err.print("[red]--format: only jsonl is supported[/red]")
        raise typer.Exit(2)
    started = time.perf_counter()

    async def work(log: AuditLog) -> tuple[int, int, list[int]]:
        if output is None:
            stats = await export_jsonl(log, sys.stdout.write)
        else:
            with output.open("w", encoding="utf-8") as handle:
                stats = await export_jsonl(log, handle.write)
        return stats.leaves, stats.checkpoints, stats.not_canonical

    leaves, checkpoints, not_canonical = run(config, work)
    err.print(f"exported {leaves:,} records and {checkpoints:,} checkpoints in {time.perf_counter() - started:.1f} s")
    if not_canonical:
        err.print(
            f"[red]{len(not_canonical)} stored records are not canonical (first: {not_canonical[0]}); "
            "exported as raw bytes[/red]"
        )
