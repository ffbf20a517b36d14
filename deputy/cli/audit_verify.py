"""``deputy audit verify``: check the log relative to what the auditor trusts, and say exactly what is wrong.

The database is opened read only (:mod:`deputy.audit.verify.readonly`) and the log's key is read, never created:
verifying changes nothing. The log's keys are followed from ``--key`` (or the oldest in the key history) through
hand-overs (:mod:`deputy.audit.log_keys`). Anchors — ``--trusted FILE`` (a checkpoint printed by ``deputy audit
checkpoint`` earlier) and each witness's latest cosigned checkpoint, fetched from its URL (``--witness``, or every
``[audit] witnesses`` entry when none is named) — must each be a prefix of the log. Records after the latest signed
checkpoint are problems beyond ``--allow-unsigned`` (0: a cleanly stopped Deputy signs its head; a running one
leaves up to about ``checkpoint_every``). Exit 1 names the first bad index.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from deputy.cli.audit_common import (
    QuorumOption,
    WitnessOption,
    log_key,
    log_keys_or_exit,
    run_readonly,
    witness_keys,
)
from deputy.cli.common import ConfigOption, console, err, settings_or_exit
from deputy.cli.small_input import CHECKPOINT_BYTES, CHECKPOINT_LINES, read_small
from deputy.cli.terminal_text import line, shown

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from deputy.audit.cosignature import CosignatureVerifier
    from deputy.audit.verify import Anchor, VerifyReport

PROGRESS_FROM = 50_000  # leaves; below this a progress bar only flickers

TrustedOption = Annotated[
    list[Path] | None,
    typer.Option("--trusted", help="a checkpoint kept from `deputy audit checkpoint`; repeatable"),
]


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
    # The origin, witness names and problems come from the log or the export being checked: shown, never markup.
    table = Table(title=line("audit log verification: ", report.source), show_header=False)
    table.add_column("what")
    table.add_column("value")
    table.add_row("origin", shown(report.origin))
    table.add_row("leaves", f"{report.leaves:,}")
    table.add_row("head size", "none" if report.head_size is None else f"{report.head_size:,}")
    table.add_row("checkpoints", f"{report.checkpoints_ok:,} of {report.checkpoints:,} match the records")
    if report.latest_checkpoint is not None:
        table.add_row("latest checkpoint", f"{report.latest_checkpoint:,}")
    if report.nodes_checked:
        table.add_row("tree nodes checked", f"{report.nodes_checked:,}")
    if report.consistency_proofs:
        table.add_row("consistency proofs", f"{report.consistency_proofs:,} verified")
    table.add_row(
        "signed",
        f"up to size {report.latest_signed:,}"
        + (f", {report.unsigned:,} records after it unsigned" if report.unsigned else ", no unsigned records"),
    )
    if report.anchors:
        table.add_row("anchors", f"{report.anchors_ok} of {report.anchors} are a prefix of the log")
    if len(report.keys) > 1:
        table.add_row("log keys", f"{len(report.keys)} (followed through {len(report.keys) - 1} hand-overs)")
    if report.witnesses:
        cosigned = ", ".join(report.cosigned_by) or "none"
        table.add_row("witnesses", line(f"{len(report.cosigned_by)} of {report.quorum} required (", cosigned, ")"))
    table.add_row("time", f"{report.seconds:.2f} s ({report.records_per_second:,.0f} records/s)")
    table.add_row("result", "[green]OK[/green]" if report.ok else f"[red]{len(report.problems)} problems[/red]")
    console.print(table)
    if not report.anchors:
        err.print(
            "[yellow]no anchor given: a log cut back to a signed checkpoint, or rewritten by the key's holder, "
            "would verify too. Keep the output of `deputy audit checkpoint` and pass it with --trusted, or name "
            "witnesses to fetch (--witness 'URL VKEY').[/yellow]",
            soft_wrap=True,
        )
    if report.ok:
        return
    first = report.first_problem
    if first is not None:
        where = f"first bad index {first.index}: " if first.index is not None else ""
        console.print(line(where, first.message, style="red"), soft_wrap=True)
    for problem in report.problems[:20]:
        console.print(line("  - ", problem.message), soft_wrap=True)
    more = len(report.problems) - 20 + report.problems_dropped
    if more > 0:
        console.print(f"  ... and {more} more")


def _read_trusted(paths: list[Path] | None) -> list[Anchor]:
    from deputy.audit.verify import AnchorError, trusted_checkpoint

    anchors = []
    for path in paths or []:
        try:
            text = read_small(path, CHECKPOINT_BYTES, CHECKPOINT_LINES, what="a checkpoint")
        except (OSError, UnicodeDecodeError) as exc:
            err.print(line(f"cannot read {path}: {exc}", style="red"), soft_wrap=True)
            raise typer.Exit(2) from None
        try:
            anchors.append(trusted_checkpoint(text, f"trusted checkpoint {path}"))
        except AnchorError as exc:
            err.print(line(str(exc), style="red"), soft_wrap=True)
            raise typer.Exit(1) from None
    return anchors


def _fetch_witnessed(witnesses: list[tuple[str, CosignatureVerifier]], origin: str) -> list[Anchor]:
    """Each witness's latest cosigned checkpoint; a witness that cannot answer fails the verification."""
    from deputy.audit.verify import AnchorError, fetch_witnessed

    async def fetch_all() -> list[Anchor]:
        return list(await asyncio.gather(*(fetch_witnessed(url, w, origin) for url, w in witnesses)))

    try:
        return asyncio.run(fetch_all()) if witnesses else []
    except AnchorError as exc:  # a witness's answer may be in it
        err.print(line(str(exc), style="red"), soft_wrap=True)
        raise typer.Exit(1) from None


def verify(
    config: ConfigOption = None,
    file: Annotated[Path | None, typer.Option("--file", help="an export to verify offline")] = None,
    key: Annotated[str | None, typer.Option("--key", help="the log's (first) vkey; required with --file")] = None,
    trusted: TrustedOption = None,
    witness: WitnessOption = None,
    quorum: QuorumOption = None,
    allow_unsigned: Annotated[
        int, typer.Option("--allow-unsigned", min=0, help="records after the latest signed checkpoint tolerated")
    ] = 0,
    workers: Annotated[int | None, typer.Option(help="processes checking records (default: auto)")] = None,
) -> None:
    """Verify every record, tree node and checkpoint, and the anchors given; exit 1 naming the first problem."""
    from deputy.audit.cosignature import CosignatureVerifier
    from deputy.audit.log_keys import LogKeys
    from deputy.audit.verify import VerifyError, verify_database, verify_file

    given = witness_keys(witness, quorum)
    cosigners = [w for _, w in given]
    anchors = _read_trusted(trusted)
    bar = _Bar()
    try:
        if file is not None:
            if key is None:
                err.print("[red]--file needs --key: the log's vkey (deputy audit key), from a source you trust[/red]")
                raise typer.Exit(2)
            keys = LogKeys([log_key(key)])
            anchors += _fetch_witnessed([(u, w) for u, w in given if u is not None], keys.origin)
            try:
                report = verify_file(
                    file,
                    keys,
                    witnesses=cosigners,
                    quorum=quorum,
                    anchors=anchors,
                    allow_unsigned=allow_unsigned,
                    progress=bar,
                    workers=workers,
                )
            except OSError as exc:
                err.print(line(f"cannot read {file}: {exc.strerror}", style="red"), soft_wrap=True)
                raise typer.Exit(2) from None
            except VerifyError as exc:
                err.print(line(str(exc), style="red"), soft_wrap=True)
                raise typer.Exit(1) from None
        else:
            settings = settings_or_exit(config)
            keys = LogKeys([log_key(key)]) if key is not None else log_keys_or_exit(settings)
            configured = {CosignatureVerifier.from_vkey(v).vkey(): u for u, v in settings.audit.witnesses}
            urls = [(u or configured.get(w.vkey()), w) for u, w in given]
            if not given:  # the configured witnesses are anchors the database writer cannot reach: ask them
                urls = [(u, CosignatureVerifier.from_vkey(v)) for u, v in settings.audit.witnesses]
            anchors += _fetch_witnessed([(u, w) for u, w in urls if u is not None], keys.origin)

            async def work(engine: AsyncEngine) -> VerifyReport:
                return await verify_database(
                    engine,
                    keys,
                    witnesses=cosigners,
                    quorum=quorum,
                    anchors=anchors,
                    allow_unsigned=allow_unsigned,
                    progress=bar,
                    workers=workers,
                )

            report = run_readonly(settings, work)
    finally:
        bar.close()
    render_report(report)
    if not report.ok:
        raise typer.Exit(1)
