"""What the ``deputy audit`` commands share: the log's keys from the command line or the key files, witness keys,
and running work against the database — migrated for the commands that write, read only for those that check."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, TypeVar

import typer

from deputy.cli.common import err, settings_or_exit
from deputy.cli.failures import StartupFailure, database_failure, exit_on_failure
from deputy.cli.terminal_text import line

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from deputy.audit.cosignature import CosignatureVerifier
    from deputy.audit.log import AuditLog
    from deputy.audit.log_keys import LogKeys
    from deputy.audit.note import NoteSigner, NoteVerifier
    from deputy.config import Settings

T = TypeVar("T")

WitnessOption = Annotated[
    list[str] | None,
    typer.Option("--witness", help="a witness's cosigner vkey, or 'URL VKEY' to also fetch its latest; repeatable"),
]
QuorumOption = Annotated[
    int | None, typer.Option("--quorum", help="valid witness cosignatures required (default: all --witness given)")
]


def signer_or_exit(settings: Settings) -> NoteSigner:
    """The log's signing key (created on first use), or exit 2 saying why it cannot be used."""
    from deputy.audit.settings import load_or_create_signer

    try:
        return load_or_create_signer(settings.audit)
    except ValueError as exc:
        err.print(line(str(exc), style="red"), soft_wrap=True)
        raise typer.Exit(2) from None


def log_keys_or_exit(settings: Settings) -> LogKeys:
    """The log's key chain from the key files, never creating a key; exit 2 if there is none."""
    from deputy.audit.settings import load_log_keys

    try:
        return load_log_keys(settings.audit)
    except ValueError as exc:
        err.print(line(f"{exc}; give the log's verifier key with --key", style="red"), soft_wrap=True)
        raise typer.Exit(2) from None


def run(config: Path | None, work: Callable[[AuditLog], Awaitable[T]]) -> T:
    """Run ``work`` with the configured database's audit log (migrated; its checkpointer not started)."""
    from sqlalchemy.exc import SQLAlchemyError

    from deputy.audit.log import AuditLog
    from deputy.audit.settings import retired_keys
    from deputy.storage.db import Database

    settings = settings_or_exit(config)
    signer = signer_or_exit(settings)
    try:
        retired = retired_keys(settings.audit)
    except ValueError as exc:
        err.print(line(str(exc), style="red"), soft_wrap=True)
        raise typer.Exit(2) from None

    async def main() -> T:
        database = Database(settings.database_url)
        try:
            try:
                await database.migrate()
            except SQLAlchemyError as exc:
                raise database_failure(exc, settings.database_url) from exc
            return await work(AuditLog(database.engine, settings.audit, signer, retired))
        finally:
            await database.dispose()

    try:
        return asyncio.run(main())
    except StartupFailure as exc:  # the database cannot be used: one line and exit 3 (deputy.cli.failures)
        exit_on_failure(exc, settings.telemetry.log_level)


def run_readonly(settings: Settings, work: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    """Run ``work`` on a read-only engine: nothing created, migrated or written; exit 1 if the log cannot be read."""
    from sqlalchemy.exc import SQLAlchemyError

    from deputy.audit.verify.readonly import DatabaseMissing, open_readonly

    try:
        engine = open_readonly(settings.database_url)
    except DatabaseMissing as exc:
        err.print(line(f"{exc}: no audit log to read", style="red"), soft_wrap=True)
        raise typer.Exit(1) from None

    async def main() -> T:
        try:
            return await work(engine)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(main())
    except SQLAlchemyError as exc:
        err.print(
            f"[red]cannot read the audit log (is this Deputy's database?): {type(exc).__name__}[/red]", soft_wrap=True
        )
        raise typer.Exit(1) from None


def log_key(vkey: str) -> NoteVerifier:
    from deputy.audit.note import NoteError, NoteVerifier

    try:
        return NoteVerifier.from_vkey(vkey)
    except NoteError as exc:
        err.print(line(f"--key is not the log's verifier key: {exc}", style="red"), soft_wrap=True)
        raise typer.Exit(2) from None


def witness_keys(values: list[str] | None, quorum: int | None) -> list[tuple[str | None, CosignatureVerifier]]:
    """``--witness`` values: (URL or None, cosigner key); a vkey never contains a space."""
    from deputy.audit.cosignature import CosignatureVerifier
    from deputy.audit.note import NoteError

    witnesses: list[tuple[str | None, CosignatureVerifier]] = []
    for value in values or []:
        url, _, vkey = value.rpartition(" ")
        try:
            witnesses.append((url.strip() or None, CosignatureVerifier.from_vkey(vkey)))
        except NoteError as exc:
            err.print(line(f"--witness is not a cosigner (type 0x04) vkey: {exc}", style="red"), soft_wrap=True)
            raise typer.Exit(2) from None
    if quorum is not None and not 0 <= quorum <= len(witnesses):
        err.print(f"[red]--quorum must be from 0 to the number of --witness given ({len(witnesses)})[/red]")
        raise typer.Exit(2)
    return witnesses
