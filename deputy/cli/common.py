"""What every command shares: the consoles, loading settings with a clear error, running with storage open."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from deputy.cli.terminal_text import line, operator_console
from deputy.config import ConfigError, Settings, load_settings
from deputy.services import Services

T = TypeVar("T")

# Every command prints through these: nothing printed can act on the terminal (deputy.cli.terminal_text).
console = operator_console()
err = operator_console(stderr=True)

ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="deputy.toml (default: $DEPUTY_CONFIG)")]


def settings_or_exit(config: Path | None, defaults: dict[str, Any] | None = None) -> Settings:
    try:
        return load_settings(config, defaults=defaults)
    except ConfigError as exc:
        err.print(line(str(exc), style="red"), soft_wrap=True)  # one line, however long: greppable, never re-wrapped
        raise typer.Exit(2) from None


def with_services(settings: Settings, work: Callable[[Services], Awaitable[T]]) -> T:
    async def run() -> T:
        services = Services.open(settings)
        try:
            await services.start()
            return await work(services)
        finally:
            await services.close()

    return asyncio.run(run())
