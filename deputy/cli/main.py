"""The ``deputy`` command: init, serve, demo, users, clients, keys."""

from __future__ import annotations

import asyncio
import logging
import secrets
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import uvicorn
from rich.table import Table

from deputy.cli.approvals import approvals_app
from deputy.cli.audit import audit_app
from deputy.cli.clients import clients_app
from deputy.cli.common import ConfigOption, console, err, settings_or_exit, with_services
from deputy.cli.consents import consents_app
from deputy.cli.policy import policy_app
from deputy.cli.tokens import tokens_app
from deputy.cli.users import users_app
from deputy.cli.witness import witness_app_cli
from deputy.services import Services
from deputy.starter import DEMO_UPSTREAM_PORT, STARTER_CONFIG, demo_defaults

if TYPE_CHECKING:
    from deputy.config import Settings
    from deputy.limits import LimitSettings
    from deputy.listener import ListenerBudget

DEMO_UPSTREAM_SHARE = 0.125  # of the connections budget, for the demo upstream in the same process

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

def _uvicorn_config(target: Any, host: str, port: int, limits: LimitSettings, budget: ListenerBudget) -> uvicorn.Config:
    from deputy.listener import guarded_http_protocol

    return uvicorn.Config(target, host=host, port=port, access_log=False, log_level="warning",
                          loop="uvloop", http=guarded_http_protocol(limits, budget), ws="none", lifespan="on",
                          backlog=budget.backlog, timeout_graceful_shutdown=5,
                          # uvicorn hands it to loop.call_later, which takes fractional seconds
                          timeout_keep_alive=limits.idle_timeout,  # type: ignore[arg-type]
                          proxy_headers=False, server_header=False)


def _listener_budget(settings: Settings) -> ListenerBudget:
    """Raise the descriptor limit and size the listener to it (see deputy.listener); say what it became."""
    from deputy.listener import listener_budget, raise_open_files_limit

    files = raise_open_files_limit()
    stdio_servers = sum(1 for server in settings.servers.values() if server.command is not None)
    budget = listener_budget(settings.limits, files.now, stdio_servers)
    raised = f" (raised from {files.before})" if files.now != files.before else ""
    console.print(f"file descriptors: {files.now}{raised}; connections: at most {budget.max_connections}")
    return budget


@app.command()
def init(path: Annotated[Path, typer.Argument()] = Path("deputy.toml"),
         force: Annotated[bool, typer.Option(help="overwrite an existing file")] = False) -> None:
    """Write a commented starter configuration."""
    if path.exists() and not force:
        err.print(f"[red]{path} exists[/red]; use --force to overwrite")
        raise typer.Exit(1)
    path.write_text(STARTER_CONFIG)
    console.print(f"wrote {path}; edit it, then run [bold]DEPUTY_CONFIG={path} deputy serve[/bold]")


@app.command()
def serve(config: ConfigOption = None) -> None:
    """Run Deputy with the given configuration."""
    from deputy.app import create_app

    settings = settings_or_exit(config)
    console.print(f"Deputy on {settings.public_url} (issuer); servers: "
                  + ", ".join(f"{settings.resource_of(n)}" for n in settings.servers))
    budget = _listener_budget(settings)
    uvicorn.Server(_uvicorn_config(create_app(settings), settings.host, settings.port, settings.limits, budget)).run()


@app.command()
def demo(upstream_port: Annotated[int, typer.Option(help="port of the demo MCP server")] = DEMO_UPSTREAM_PORT) -> None:
    """Run Deputy with embedded defaults in front of the demo MCP server."""
    from deputy.app import create_app
    from deputy.demo.server import demo_asgi_app

    settings = settings_or_exit(None, demo_defaults(upstream_port))
    password = settings.demo_password or secrets.token_urlsafe(12)

    approver_password = secrets.token_urlsafe(12)

    async def ensure_users(services: Services) -> None:
        for username, secret in (("alice", password), ("bob", approver_password)):
            if not await services.users.set_password(username, secret):
                await services.users.add(username, secret)

    with_services(settings, ensure_users)
    url = settings.resource_of("demo")
    console.print(f"""[bold]Deputy demo[/bold]
  MCP server (through Deputy): [cyan]{url}[/cyan]
  Issuer:                      {settings.issuer}
  Demo upstream (direct):      http://127.0.0.1:{upstream_port}/mcp
  Sign in as alice / {password}
  Policies:                    {settings.servers["demo"].policies}
    (delete_user with id < 100 is forbidden; other deletions wait for a human approval:
     bob / {approver_password} approves at the link the client is given, or `deputy approvals`)

Connect a client, e.g. from a desktop host that speaks stdio:
  npx mcp-remote {url}
or the MCP Python SDK, with the whole client in examples/sdk_client.py (README, "Connect a client"):
  .venv/bin/python examples/sdk_client.py {url}                         # opens your browser
  .venv/bin/python examples/sdk_client.py {url} --password {password}   # no browser
""", soft_wrap=True)  # keep URLs and code whole; a terminal wraps them itself

    # The SDK's demo server logs every session at INFO; the demo's own output is what matters here.
    logging.getLogger("mcp").setLevel(logging.WARNING)

    budget = _listener_budget(settings)

    async def run() -> None:
        # The demo upstream shares the process, so it takes a small part of the descriptor budget.
        upstream = uvicorn.Server(_uvicorn_config(demo_asgi_app(), "127.0.0.1", upstream_port, settings.limits,
                                                  budget.share(DEMO_UPSTREAM_SHARE)))
        deputy = uvicorn.Server(_uvicorn_config(create_app(settings), settings.host, settings.port, settings.limits,
                                                budget.share(1 - DEMO_UPSTREAM_SHARE)))
        serving = asyncio.create_task(upstream.serve())
        # Deputy checks its policies against the upstream's tools at start; uvicorn offers a flag, not an event.
        while not upstream.started and not serving.done():  # noqa: ASYNC110
            await asyncio.sleep(0.05)
        await asyncio.gather(serving, deputy.serve())

    asyncio.run(run())


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
