"""``deputy audit``: verify the audit log, prove records offline, follow it, export it, publish its key.

- ``verify`` checks the database's log (or ``--file``, an export, offline with ``--key``): every record, every tree
  node, every checkpoint's signature and root, the head; ``--witness VKEY`` (repeatable) also requires ``--quorum``
  (default: all given) valid witness cosignatures on the latest checkpoint. Exit 1 names the first bad index.
- ``prove N`` prints a C2SP tlog-proof for record N; ``check-proof FILE --key VKEY`` checks one offline.
- ``consistency A B`` prints (and checks) the proof that checkpoint A is a prefix of checkpoint B.
- ``tail`` prints the latest records as lines (``-f`` follows), filtered by user, agent, tool, outcome or txn.
- ``export --format jsonl`` streams the log as JSON Lines (see :mod:`deputy.audit.export`).
- ``key`` prints the log's verifier key, which is all anyone needs to verify an export or a proof.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from sqlalchemy import select

from deputy.audit.bundle import BundleError, check_bundle, check_consistency, consistency, make_bundle
from deputy.audit.cosignature import CosignatureVerifier
from deputy.audit.export import export_jsonl
from deputy.audit.log import AuditLog
from deputy.audit.note import NoteError, NoteSigner, NoteVerifier
from deputy.audit.settings import load_or_create_signer
from deputy.audit.verify import VerifyError, VerifyReport, verify_database, verify_file
from deputy.cli.common import ConfigOption, console, err, settings_or_exit
from deputy.config import Settings
from deputy.storage.db import Database
from deputy.storage.tables import audit_leaves

T = TypeVar("T")

audit_app = typer.Typer(help="The tamper-evident audit log: verify, prove, tail, export.", no_args_is_help=True)

WitnessOption = Annotated[list[str] | None, typer.Option("--witness", help="a witness's cosigner vkey; repeatable")]
QuorumOption = Annotated[
    int | None, typer.Option("--quorum", help="valid witness cosignatures required (default: all --witness given)")
]
PROGRESS_FROM = 50_000  # leaves; below this a progress bar only flickers


def _signer_or_exit(settings: Settings) -> NoteSigner:
    """The log's signing key (created on first use), or exit 2 saying why it cannot be used."""
    try:
        return load_or_create_signer(settings.audit)
    except ValueError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


def _run(config: Path | None, work: Callable[[AuditLog], Awaitable[T]]) -> T:
    """Run ``work`` with the configured database's audit log (migrated; its checkpointer not started)."""
    settings = settings_or_exit(config)
    signer = _signer_or_exit(settings)

    async def run() -> T:
        database = Database(settings.database_url)
        try:
            await database.migrate()
            return await work(AuditLog(database.engine, settings.audit, signer))
        finally:
            await database.dispose()

    return asyncio.run(run())


def _log_key(vkey: str) -> NoteVerifier:
    try:
        return NoteVerifier.from_vkey(vkey)
    except NoteError as exc:
        err.print(f"[red]--key is not the log's verifier key: {exc}[/red]")
        raise typer.Exit(2) from None


def _witness_keys(values: list[str] | None, quorum: int | None) -> list[CosignatureVerifier]:
    try:
        witnesses = [CosignatureVerifier.from_vkey(v) for v in values or []]
    except NoteError as exc:
        err.print(f"[red]--witness is not a cosigner (type 0x04) vkey: {exc}[/red]")
        raise typer.Exit(2) from None
    if quorum is not None and not 0 <= quorum <= len(witnesses):
        err.print(f"[red]--quorum must be from 0 to the number of --witness given ({len(witnesses)})[/red]")
        raise typer.Exit(2)
    return witnesses


class _Bar:
    """A rich progress bar, shown only for long logs on a terminal."""

    def __init__(self) -> None:
        self.progress: Progress | None = None
        self.task: Any = None

    def __call__(self, done: int, total: int) -> None:
        if self.progress is None:
            if total < PROGRESS_FROM or not err.is_terminal:
                return
            self.progress = Progress(
                TextColumn("verifying"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(), console=err
            )
            self.progress.start()
            self.task = self.progress.add_task("leaves", total=total)
        self.progress.update(self.task, completed=done, total=total)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def render_report(report: VerifyReport) -> None:
    table = Table(title=f"audit log verification: {report.source}", show_header=False)
    table.add_column("what")
    table.add_column("value")
    table.add_row("origin", report.origin)
    table.add_row("leaves", f"{report.leaves:,}")
    table.add_row("head size", "none" if report.head_size is None else f"{report.head_size:,}")
    table.add_row("checkpoints", f"{report.checkpoints_ok:,} of {report.checkpoints:,} match the records")
    if report.latest_checkpoint is not None:
        table.add_row("latest checkpoint", f"{report.latest_checkpoint:,}")
    if report.nodes_checked:
        table.add_row("tree nodes checked", f"{report.nodes_checked:,}")
    if report.consistency_proofs:
        table.add_row("consistency proofs", f"{report.consistency_proofs:,} verified")
    if report.witnesses:
        cosigned = ", ".join(report.cosigned_by) or "none"
        table.add_row("witnesses", f"{len(report.cosigned_by)} of {report.quorum} required ({cosigned})")
    table.add_row("time", f"{report.seconds:.2f} s ({report.records_per_second:,.0f} records/s)")
    table.add_row("result", "[green]OK[/green]" if report.ok else f"[red]{len(report.problems)} problems[/red]")
    console.print(table)
    if report.ok:
        return
    first = report.first_problem
    if first is not None:
        where = f"first bad index {first.index}: " if first.index is not None else ""
        console.print(f"[red]{where}{first.message}[/red]", soft_wrap=True, highlight=False)
    for problem in report.problems[:20]:
        console.print(f"  - {problem.message}", soft_wrap=True, highlight=False, markup=False)
    more = len(report.problems) - 20 + report.problems_dropped
    if more > 0:
        console.print(f"  ... and {more} more")


@audit_app.command("verify")
def verify(
    config: ConfigOption = None,
    file: Annotated[Path | None, typer.Option("--file", help="an export to verify offline")] = None,
    key: Annotated[str | None, typer.Option("--key", help="the log's vkey (required with --file)")] = None,
    witness: WitnessOption = None,
    quorum: QuorumOption = None,
    workers: Annotated[int | None, typer.Option(help="processes checking records (default: auto)")] = None,
) -> None:
    """Verify every record, tree node and checkpoint of the log; exit 1 naming the first problem."""
    witnesses = _witness_keys(witness, quorum)
    bar = _Bar()
    try:
        if file is not None:
            if key is None:
                err.print("[red]--file needs --key: the log's vkey (deputy audit key), from a source you trust[/red]")
                raise typer.Exit(2)
            try:
                report = verify_file(
                    file, _log_key(key), witnesses=witnesses, quorum=quorum, progress=bar, workers=workers
                )
            except OSError as exc:
                err.print(f"[red]cannot read {file}: {exc.strerror}[/red]")
                raise typer.Exit(2) from None
            except VerifyError as exc:
                err.print(f"[red]{exc}[/red]")
                raise typer.Exit(1) from None
        else:
            verifier = _log_key(key) if key is not None else None

            async def work(log: AuditLog) -> VerifyReport:
                return await verify_database(
                    log.engine,
                    verifier or log.verifier,
                    witnesses=witnesses,
                    quorum=quorum,
                    progress=bar,
                    workers=workers,
                )

            report = _run(config, work)
    finally:
        bar.close()
    render_report(report)
    if not report.ok:
        raise typer.Exit(1)


@audit_app.command("prove")
def prove(
    index: Annotated[int, typer.Argument(help="the record's index in the log")],
    config: ConfigOption = None,
    size: Annotated[int | None, typer.Option(help="prove against this checkpoint (default: the latest)")] = None,
) -> None:
    """Print a C2SP tlog-proof of one record (the record, its inclusion path, the signed checkpoint)."""

    async def work(log: AuditLog) -> str:
        return (await make_bundle(log, index, size)).text()

    try:
        sys.stdout.write(_run(config, work))
    except BundleError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(1) from None


@audit_app.command("check-proof")
def check_proof(
    file: Annotated[Path, typer.Argument(help="a tlog-proof (from deputy audit prove)")],
    key: Annotated[str, typer.Option("--key", help="the log's vkey")],
    witness: WitnessOption = None,
    quorum: QuorumOption = None,
) -> None:
    """Check a record's proof offline: record, log signature, witness cosignatures, inclusion."""
    witnesses = _witness_keys(witness, quorum)
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        err.print(f"[red]cannot read {file}: {exc}[/red]")
        raise typer.Exit(2) from None
    try:
        checked = check_bundle(text, _log_key(key), witnesses, len(witnesses) if quorum is None else quorum)
    except BundleError as exc:
        console.print(f"[red]proof FAILED: {exc}[/red]", soft_wrap=True, highlight=False)
        raise typer.Exit(1) from None
    record = checked.record
    cosigned = f", cosigned by {', '.join(checked.cosigners)}" if checked.cosigners else ""
    console.print(
        f"[green]proof OK[/green]: record {checked.index} ({record.get('type')} {record.get('id')}) is in "
        f"checkpoint {checked.checkpoint.size} of {checked.checkpoint.origin}{cosigned}",
        soft_wrap=True,
        highlight=False,
    )
    console.print_json(json.dumps(dict(record)))


@audit_app.command("consistency")
def consistency_cmd(
    size_a: Annotated[int, typer.Argument(help="the older checkpoint's size")],
    size_b: Annotated[int, typer.Argument(help="the newer checkpoint's size")],
    config: ConfigOption = None,
) -> None:
    """Print the proof that checkpoint A is a prefix of checkpoint B, and check it with the log's key."""

    async def work(log: AuditLog) -> tuple[str, NoteVerifier]:
        return (await consistency(log, size_a, size_b)).text(), log.verifier

    try:
        text, verifier = _run(config, work)
        old, new = check_consistency(text, verifier)
    except BundleError as exc:
        err.print(f"[red]{exc}[/red]")
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
    interval: Annotated[float, typer.Option(help="seconds between polls with -f")] = 1.0,
) -> None:
    """Print the latest records, one line each: time, index, type, user, agent, tool, outcome, decision id."""
    wanted = {
        k: v
        for k, v in {"user": user, "agent": agent, "tool": tool, "outcome": decision, "txn": txn}.items()
        if v is not None
    }

    def matches(record: Mapping[str, Any]) -> bool:
        fields = _fields(record)
        return all(fields[k] == v for k, v in wanted.items())

    def show(index: int, entry: bytes) -> bool:
        try:
            record = json.loads(entry)
        except ValueError:
            return False
        if not isinstance(record, dict) or not matches(record):
            return False
        console.print(_line(index, record), soft_wrap=True, highlight=False, markup=False)
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
                record = json.loads(entry)
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
        _run(config, work)
    except KeyboardInterrupt:
        return


@audit_app.command("export")
def export(
    config: ConfigOption = None,
    format_: Annotated[str, typer.Option("--format", help="only jsonl")] = "jsonl",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="file to write (default: stdout)")] = None,
) -> None:
    """Stream the whole log as JSON Lines: header, records, signed checkpoints with consistency proofs."""
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

    leaves, checkpoints, not_canonical = _run(config, work)
    err.print(f"exported {leaves:,} records and {checkpoints:,} checkpoints in {time.perf_counter() - started:.1f} s")
    if not_canonical:
        err.print(
            f"[red]{len(not_canonical)} stored records are not canonical (first: {not_canonical[0]}); "
            "exported as raw bytes[/red]"
        )


@audit_app.command("key")
def key(config: ConfigOption = None) -> None:
    """Print the log's verifier key (vkey): publish it so others can verify exports and proofs."""
    settings = settings_or_exit(config)
    signer = _signer_or_exit(settings)
    console.print(signer.verifier().vkey(), soft_wrap=True, highlight=False)
