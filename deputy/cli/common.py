"""What every command shares: loading settings with a clear error, and running with storage open."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from deputy.config import ConfigError, Settings, load_settings
from deputy.services import Services

T = TypeVar("T")

console = Console()
err = Console(stderr=True)

ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="deputy.toml (default: $DEPUTY_CONFIG)")]


def settings_or_exit(config: Path | None, defaults: dict[str, Any] | None = None) -> Settings:
    try:
        return load_settings(config, defaults=defaults)
    except ConfigError as exc:
        err.print(f"[red]{exc}[/red]")
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
