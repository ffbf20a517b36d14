"""``deputy audit key`` (print, ``rotate``) and ``deputy audit checkpoint``: the log's keys and what an auditor keeps.

- ``key`` prints the log's current verifier key (made on first use, so it can be given to witnesses before the
  first start); ``key history`` prints every key the log has had, oldest first.
- ``key rotate`` hands the log over to a new signing key (:mod:`deputy.audit.rotation`): recorded in the log
  (``key.rotated``, "audit signing"), signed by the old and the new key, pushed to the witnesses.
- ``checkpoint`` prints the latest signed checkpoint — a C2SP signed note, with the witnesses' cosignature lines
  kept for it — exactly as ``deputy audit verify --trusted FILE`` reads it back. It reads the database read only.
"""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING

import typer

from deputy.cli.audit_common import run_readonly, signer_or_exit
from deputy.cli.common import ConfigOption, console, err, settings_or_exit
from deputy.cli.terminal_text import line

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from deputy.audit.note import NoteVerifier
    from deputy.config import Settings

key_app = typer.Typer(help="The log's signing key: print it, list its history, rotate it.", invoke_without_command=True)


@key_app.callback()
def key(ctx: typer.Context, config: ConfigOption = None) -> None:
    """Print the log's verifier key (vkey): publish it so others can verify exports and proofs."""
    if ctx.invoked_subcommand is not None:
        return
    signer = signer_or_exit(settings_or_exit(config))
    console.print(signer.verifier().vkey(), soft_wrap=True, highlight=False)


def _known_keys(settings: Settings) -> list[NoteVerifier]:
    """Every verifier key the log has had, oldest first (the history file, then the current key); none created."""
    from deputy.audit.note import NoteError, NoteVerifier
    from deputy.audit.settings import history_file, load_signer

    vkeys: list[str] = []
    path = history_file(settings.audit)
    try:
        if path.exists():
            vkeys = path.read_text(encoding="utf-8").split()
        current = load_signer(settings.audit).verifier().vkey() if settings.audit.key_file.exists() else None
        keys = [NoteVerifier.from_vkey(v) for v in vkeys + ([current] if current and current not in vkeys else [])]
    except (OSError, UnicodeDecodeError, NoteError, ValueError) as exc:
        err.print(line(f"cannot read the log's keys: {exc}", style="red"), soft_wrap=True)
        raise typer.Exit(2) from None
    if not keys:
        err.print(f"[red]there is no audit signing key at {settings.audit.key_file}[/red]", soft_wrap=True)
        raise typer.Exit(2)
    return keys


@key_app.command("history")
def key_history(config: ConfigOption = None) -> None:
    """Print every verifier key the log has had, oldest first (the last one signs now)."""
    for verifier in _known_keys(settings_or_exit(config)):
        console.print(verifier.vkey(), soft_wrap=True, highlight=False)


@key_app.command("rotate")
def key_rotate(config: ConfigOption = None) -> None:
    """Hand the log over to a new signing key. Stop every Deputy process first; start them again after."""
    from deputy.audit.rotation import RotationError, rotate
    from deputy.storage.db import Database

    settings = settings_or_exit(config)

    async def work() -> None:
        database = Database(settings.database_url)
        try:
            await database.migrate()
            done = await rotate(database.engine, settings.audit)
        finally:
            await database.dispose()
        console.print(
            f"hand-over checkpoint at size {done.handover.checkpoint.size}, signed by the old and the new key",
            highlight=False,
        )
        for result in done.witnesses:
            state = "cosigned: it follows the new key" if result.line else f"FAILED ({result.error})"
            console.print(line(f"witness {result.witness}: {state}"), soft_wrap=True)  # a witness's answer
        console.print(done.new_vkey, soft_wrap=True, highlight=False)

    try:
        asyncio.run(work())
    except RotationError as exc:
        err.print(line(str(exc), style="red"), soft_wrap=True)
        raise typer.Exit(1) from None


def checkpoint(config: ConfigOption = None) -> None:
    """Print the latest signed checkpoint (with its cosignatures) for an auditor to keep and pass to --trusted."""
    from sqlalchemy import select

    from deputy.audit.note import NoteError, open_note
    from deputy.audit.witness_push import cosigned_note
    from deputy.storage.tables import audit_checkpoints, audit_cosignatures

    settings = settings_or_exit(config)
    keys = _known_keys(settings)

    async def work(engine: AsyncEngine) -> str | None:
        async with engine.connect() as conn:
            row = (
                await conn.execute(
                    select(audit_checkpoints.c.size, audit_checkpoints.c.note)
                    .order_by(audit_checkpoints.c.size.desc())
                    .limit(1)
                )
            ).first()
            if row is None:
                return None
            lines = (
                await conn.execute(
                    select(audit_cosignatures.c.line)
                    .where(audit_cosignatures.c.size == row.size)
                    .order_by(audit_cosignatures.c.witness_name)
                )
            ).scalars()
            return cosigned_note(str(row.note), [str(line) for line in lines])

    note = run_readonly(settings, work)
    if note is None:
        err.print("[red]the log has no signed checkpoint yet[/red]", soft_wrap=True)
        raise typer.Exit(1)
    try:
        open_note(note, keys)
    except NoteError as exc:
        err.print(line(f"the latest stored checkpoint is not signed by the log's key: {exc}", style="red"),
                  soft_wrap=True)
        raise typer.Exit(1) from None
    sys.stdout.write(note)


__all__ = ["checkpoint", "key_app"]
