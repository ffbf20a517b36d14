"""What every command shares: the consoles, loading settings with a clear error, running with storage open.

Without ``--config`` or ``DEPUTY_CONFIG`` a command reads the configuration ``deputy demo`` recorded in its data
directory (``DEPUTY_DATA_DIR``, else ``.deputy``: ``demo.toml``, :mod:`deputy.starter`), so the admin commands work
against the demo's state as its banner says; with neither, it says how to give one. Failures to open storage are
one line and an exit code (:mod:`deputy.cli.failures`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Awaitable, Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar, cast

import typer

from deputy.cli.failures import EXIT_CONFIG, database_failure, exit_on_failure
from deputy.cli.terminal_text import line, operator_console
from deputy.services import Services
from deputy.starter import DEFAULT_DATA_DIR, demo_config_path
from deputy.telemetry.logs import LOG_LEVELS

# Every command module imports this one, and `deputy --help` imports every command module: what only running a
# command needs (the configuration's models, SQLAlchemy) is imported in the functions that run it.
if TYPE_CHECKING:
    from deputy.config import Settings
    from deputy.telemetry.logs import LogLevel

T = TypeVar("T")

# Every command prints through these: nothing printed can act on the terminal (deputy.cli.terminal_text).
console = operator_console()
err = operator_console(stderr=True)

ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="deputy.toml (default: $DEPUTY_CONFIG)")]
LogLevelName = StrEnum("LogLevelName", {level: level for level in LOG_LEVELS})  # type: ignore[misc]
LogLevelOption = Annotated[LogLevelName | None, typer.Option(
    "--log-level", case_sensitive=False,
    help="log level (default: log_level, $DEPUTY_LOG_LEVEL, info); debug also shows a start-up failure's traceback")]
NO_CONFIG = ("no configuration: give one with --config FILE or DEPUTY_CONFIG=FILE (`deputy init deputy.toml` writes "
             "a commented starter), or run `deputy demo` here first")


def fail(code: int, message: str) -> NoReturn:
    err.print(line(message, style="red"), soft_wrap=True)  # one line, however long: greppable, never re-wrapped
    raise typer.Exit(code)


def settings_or_exit(config: Path | None, defaults: dict[str, Any] | None = None) -> Settings:
    from deputy.config import ConfigError, load_settings

    if config is None and defaults is None and not os.environ.get("DEPUTY_CONFIG"):
        recorded = demo_config_path(Path(os.environ.get("DEPUTY_DATA_DIR") or DEFAULT_DATA_DIR))
        if not recorded.is_file():
            fail(EXIT_CONFIG, NO_CONFIG)
        config = recorded
    try:
        return load_settings(config, defaults=defaults)
    except ConfigError as exc:
        fail(EXIT_CONFIG, str(exc))


def start_logging(settings: Settings, log_level: StrEnum | None) -> str:
    """Deputy's logs at ``--log-level`` (else ``log_level``); the level, which also decides tracebacks."""
    from deputy.telemetry.logs import configure_logging

    level = cast("LogLevel", str(log_level) if log_level is not None else settings.telemetry.log_level)
    configure_logging(level, settings.telemetry.log_format)
    return level


def with_services(settings: Settings, work: Callable[[Services], Awaitable[T]]) -> T:
    """Run ``work`` with storage open and started; storage that cannot be opened is one line and its exit code."""
    from sqlalchemy.exc import SQLAlchemyError

    from deputy.cli.serving import check_data_dir

    async def run() -> T:
        services = Services.open(settings)
        try:
            await services.start()
        except SQLAlchemyError as exc:
            # Not services.close(): the audit log never started, and its last checkpoint would fail once more.
            with contextlib.suppress(Exception):
                await services.database.dispose()
            raise database_failure(exc, settings.database_url) from exc
        try:
            return await work(services)
        finally:
            await services.close()

    try:
        check_data_dir(settings.data_dir)
        return asyncio.run(run())
    except typer.Exit:
        raise
    except Exception as exc:
        exit_on_failure(exc, settings.telemetry.log_level, unknown=False)
