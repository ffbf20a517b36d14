"""The ``deputy`` command: init, serve, demo, users, clients, keys."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from deputy.cli.approvals import approvals_app
from deputy.cli.audit import audit_app
from deputy.cli.clients import clients_app
from deputy.cli.common import (
    ConfigOption,
    LogLevelOption,
    console,
    err,
    fail,
    settings_or_exit,
    start_logging,
    with_services,
)
from deputy.cli.connections import connections_app
from deputy.cli.consents import consents_app
from deputy.cli.demo_command import demo
from deputy.cli.failures import EXIT_CONFIG, exit_on_failure
from deputy.cli.policy import policy_app
from deputy.cli.tokens import tokens_app
from deputy.cli.users import users_app
from deputy.cli.vault import vault_app
from deputy.cli.witness import witness_app_cli
from deputy.limits import MAX_WORKERS
from deputy.services import Services
from deputy.starter import STARTER_CONFIG

if TYPE_CHECKING:
    from deputy.config import Settings
    from deputy.listener import ListenerBudget

app = typer.Typer(help="Deputy: an authorization gateway for MCP servers.", no_args_is_help=True)
keys_app = typer.Typer(help="Token signing keys.", no_args_is_help=True)
app.add_typer(users_app, name="users")
app.add_typer(clients_app, name="clients")
app.add_typer(consents_app, name="consents")
app.add_typer(keys_app, name="keys")
app.add_typer(tokens_app, name="token")
app.add_typer(policy_app, name="policy")
app.add_typer(approvals_app, name="approvals")
app.add_typer(witness_app_cli, name="witness")
app.add_typer(audit_app, name="audit")
app.add_typer(connections_app, name="connections")
app.add_typer(vault_app, name="vault")
app.command()(demo)


@app.command()
def init(path: Annotated[Path, typer.Argument()] = Path("deputy.toml"),
         force: Annotated[bool, typer.Option(help="overwrite an existing file")] = False) -> None:
    """Write a commented starter configuration."""
    if path.exists() and not force:
        err.print(f"[red]{path} exists[/red]; use --force to overwrite")
        raise typer.Exit(1)
    path.write_text(STARTER_CONFIG)
    console.print(f"wrote {path}; edit it, then run [bold]DEPUTY_CONFIG={path} deputy serve[/bold]")


WorkersOption = Annotated[int | None, typer.Option(
    "--workers", min=1, max=MAX_WORKERS,
    help="processes serving the one port and database (default: workers, $DEPUTY_WORKERS, 1)")]


@app.command()
def serve(config: ConfigOption = None, log_level: LogLevelOption = None, workers: WorkersOption = None) -> None:
    """Run Deputy with the given configuration."""
    # Imported here, not at the top: every deputy command (--help too) imports this module, and only serving
    # needs uvicorn and the listener (tests/unit/test_lazy_imports.py).
    from deputy.cli.serving import bind, check_commands, check_data_dir, listener_budget, run_async
    from deputy.cli.workers import with_workers

    if config is None and not os.environ.get("DEPUTY_CONFIG"):
        fail(EXIT_CONFIG, "no configuration: give one with --config FILE or DEPUTY_CONFIG=FILE (`deputy init "
                          "deputy.toml` writes a commented starter), or try `deputy demo`")
    settings = with_workers(settings_or_exit(config), workers)
    level = start_logging(settings, log_level)
    try:
        check_commands(settings.servers)
        check_data_dir(settings.data_dir)
        budget, files = listener_budget(settings)
        sock = bind(settings.host, settings.port, budget.backlog, "host and port",
                    "stop what listens there, or set port (DEPUTY_PORT) to a free one")
        if settings.workers > 1:
            _serve_workers(settings, sock, budget, files, level)
        else:
            run_async(_serve(settings, sock, budget, files))
    except typer.Exit:
        raise
    except Exception as exc:
        exit_on_failure(exc, level, settings.database_url)


def _banner(settings: Settings, files: str) -> None:
    workers = f"; workers: {settings.workers}" if settings.workers > 1 else ""
    console.print(f"Deputy on {settings.public_url} (issuer); servers: "
                  + ", ".join(f"{settings.resource_of(n)}" for n in settings.servers) + workers)
    console.print(files)


def _serve_workers(settings: Settings, sock: socket.socket, budget: ListenerBudget, files: str, level: str) -> None:
    """Start-up once in this process, then the workers (deputy.cli.workers); a worker's failure to start is raised
    here, before the banner, as a single process's would be."""
    from deputy.cli.workers import Supervisor, prepare_shared_state

    asyncio.run(prepare_shared_state(settings))
    supervisor = Supervisor(settings, sock, budget, level)
    supervisor.start()
    if supervisor.stop_signal is None:
        _banner(settings, files)
        supervisor.serve()
    supervisor.end_by_signal()


async def _serve(settings: Settings, sock: socket.socket, budget: ListenerBudget, files: str) -> None:
    from deputy.app import create_app
    from deputy.cli.serving import Lifespan, Server, uvicorn_config

    target = create_app(settings)
    lifespan = Lifespan(target)
    await lifespan.startup()  # the database, the audit log, the policies: a failure stops here, before the banner
    try:
        _banner(settings, files)
        await Server(uvicorn_config(target, settings.limits, budget), lifespan).serve(sockets=[sock])
    finally:
        await lifespan.shutdown()


@keys_app.command("rotate")
def keys_rotate(config: ConfigOption = None) -> None:
    """Add a new signing key; old public keys stay published until their tokens expire."""

    async def rotate(services: Services) -> str:
        kid = services.keyring.rotate()
        await services.record("key.rotated", kid=kid, keys="token signing (ES256)")
        return kid

    console.print(f"new signing key [bold]{with_services(settings_or_exit(config), rotate)}[/bold]")


@keys_app.command("list")
def keys_list(config: ConfigOption = None) -> None:
    """List signing keys."""
    from deputy.keys import KeyRing

    settings = settings_or_exit(config)
    table = Table("kid", "created", "retired")
    for e in KeyRing.open(settings.data_dir / "keys", settings.access_token_ttl).entries():
        table.add_row(e.kid, str(e.created_at), str(e.retired_at or "active"))
    console.print(table)


@app.command()
def migrate(config: ConfigOption = None) -> None:
    """Apply database migrations (also done at every start)."""
    async def noop(_s: Services) -> None:
        return None

    with_services(settings_or_exit(config), noop)
    console.print("database is up to date")


def main() -> None:  # pragma: no cover - console entry point
    sys.exit(app())
