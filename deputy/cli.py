"""The ``deputy`` command: init, serve, demo, users, clients, keys."""

from __future__ import annotations

import asyncio
import secrets
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
import uvicorn
from rich.console import Console
from rich.table import Table

from deputy.config import ConfigError, Settings, load_settings
from deputy.services import Services
from deputy.starter import DEMO_UPSTREAM_PORT, STARTER_CONFIG, demo_defaults

app = typer.Typer(help="Deputy: an authorization gateway for MCP servers.", no_args_is_help=True)
users_app = typer.Typer(help="Local users who sign in on the login page.", no_args_is_help=True)
clients_app = typer.Typer(help="OAuth clients.", no_args_is_help=True)
keys_app = typer.Typer(help="Token signing keys.", no_args_is_help=True)
app.add_typer(users_app, name="users")
app.add_typer(clients_app, name="clients")
app.add_typer(keys_app, name="keys")

console = Console()
err = Console(stderr=True)
T = TypeVar("T")

ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="deputy.toml (default: $DEPUTY_CONFIG)")]


def _settings(config: Path | None, defaults: dict[str, Any] | None = None) -> Settings:
    try:
        return load_settings(config, defaults=defaults)
    except ConfigError as exc:
        err.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None


def _with_services(settings: Settings, work: Callable[[Services], Awaitable[T]]) -> T:
    async def run() -> T:
        services = Services.open(settings)
        try:
            await services.start()
            return await work(services)
        finally:
            await services.database.dispose()

    return asyncio.run(run())


def _uvicorn_config(target: Any, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(target, host=host, port=port, access_log=False, log_level="warning",
                          loop="uvloop", http="httptools", lifespan="on", timeout_graceful_shutdown=5,
                          proxy_headers=False, server_header=False)


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

    settings = _settings(config)
    console.print(f"Deputy on {settings.public_url} (issuer); servers: "
                  + ", ".join(f"{settings.resource_of(n)}" for n in settings.servers))
    uvicorn.Server(_uvicorn_config(create_app(settings), settings.host, settings.port)).run()


@app.command()
def demo(upstream_port: Annotated[int, typer.Option(help="port of the demo MCP server")] = DEMO_UPSTREAM_PORT) -> None:
    """Run Deputy with embedded defaults in front of the demo MCP server."""
    from deputy.app import create_app
    from deputy.demo.server import demo_asgi_app

    settings = _settings(None, demo_defaults(upstream_port))
    password = settings.demo_password or secrets.token_urlsafe(12)

    async def ensure_alice(services: Services) -> None:
        if not await services.users.set_password("alice", password):
            await services.users.add("alice", password)

    _with_services(settings, ensure_alice)
    url = settings.resource_of("demo")
    console.print(f"""[bold]Deputy demo[/bold]
  MCP server (through Deputy): [cyan]{url}[/cyan]
  Issuer:                      {settings.issuer}
  Demo upstream (direct):      http://127.0.0.1:{upstream_port}/mcp
  Sign in as alice / {password}

Connect a client, e.g. from a desktop host that speaks stdio:
  npx mcp-remote {url}
or the MCP Python SDK (full example in README, "Connect a client"):
  auth = OAuthClientProvider(server_url="{url}", client_metadata=..., storage=...,
                             redirect_handler=open_browser, callback_handler=wait_for_callback)
  async with httpx2.AsyncClient(auth=auth) as http, Client(streamable_http_client("{url}", http_client=http)) as c:
      print(await c.call_tool("add", {{"a": 1, "b": 2}}))
""")

    async def run() -> None:
        upstream = uvicorn.Server(_uvicorn_config(demo_asgi_app(), "127.0.0.1", upstream_port))
        deputy = uvicorn.Server(_uvicorn_config(create_app(settings), settings.host, settings.port))
        await asyncio.gather(upstream.serve(), deputy.serve())

    asyncio.run(run())


@users_app.command("add")
def users_add(name: str, config: ConfigOption = None,
              password: Annotated[str | None, typer.Option(help="default: prompt")] = None) -> None:
    """Add a local user (password hashed with argon2id)."""
    from deputy.storage.users import UserExists

    settings = _settings(config)
    secret = password or typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        user = _with_services(settings, lambda s: s.users.add(name, secret))
    except UserExists:
        err.print(f"[red]user {name} already exists[/red]")
        raise typer.Exit(1) from None
    console.print(f"added user [bold]{user.username}[/bold] ({user.user_id})")


@users_app.command("list")
def users_list(config: ConfigOption = None) -> None:
    """List local users."""
    table = Table("username", "user id")
    for user in _with_services(_settings(config), lambda s: s.users.list()):
        table.add_row(user.username, user.user_id)
    console.print(table)


@clients_app.command("add")
def clients_add(
    name: str,
    redirect_uri: Annotated[list[str], typer.Option("--redirect-uri", help="repeat for several")],
    config: ConfigOption = None,
    client_id: Annotated[str | None, typer.Option(help="default: random")] = None,
    confidential: Annotated[bool, typer.Option(help="issue a client secret (client_secret_basic)")] = False,
) -> None:
    """Register a client by hand."""
    settings = _settings(config)
    cid = client_id or secrets.token_hex(16)
    secret = secrets.token_urlsafe(32) if confidential else None
    _with_services(settings, lambda s: s.clients.put(
        client_id=cid, client_name=name, redirect_uris=redirect_uri, source="cli",
        token_endpoint_auth_method="client_secret_basic" if confidential else "none", client_secret=secret))
    console.print(f"client_id: [bold]{cid}[/bold]")
    if secret:
        console.print(f"client_secret (shown once): [bold]{secret}[/bold]")


@clients_app.command("list")
def clients_list(config: ConfigOption = None) -> None:
    """List registered clients."""
    table = Table("client id", "name", "auth", "source", "redirect URIs")
    for c in _with_services(_settings(config), lambda s: s.clients.list()):
        table.add_row(c.client_id, c.client_name, c.token_endpoint_auth_method, c.source, "\n".join(c.redirect_uris))
    console.print(table)


@clients_app.command("remove")
def clients_remove(client_id: str, config: ConfigOption = None) -> None:
    """Remove a client."""
    if not _with_services(_settings(config), lambda s: s.clients.remove(client_id)):
        err.print(f"[red]no client {client_id}[/red]")
        raise typer.Exit(1)
    console.print(f"removed {client_id}")


@keys_app.command("rotate")
def keys_rotate(config: ConfigOption = None) -> None:
    """Add a new signing key; old public keys stay published until their tokens expire."""
    from deputy.keys import KeyRing

    settings = _settings(config)
    ring = KeyRing.open(settings.data_dir / "keys", settings.access_token_ttl)
    console.print(f"new signing key [bold]{ring.rotate()}[/bold]")


@keys_app.command("list")
def keys_list(config: ConfigOption = None) -> None:
    """List signing keys."""
    from deputy.keys import KeyRing

    settings = _settings(config)
    table = Table("kid", "created", "retired")
    for e in KeyRing.open(settings.data_dir / "keys", settings.access_token_ttl).entries():
        table.add_row(e.kid, str(e.created_at), str(e.retired_at or "active"))
    console.print(table)


@app.command()
def migrate(config: ConfigOption = None) -> None:
    """Apply database migrations (also done at every start)."""
    async def noop(_s: Services) -> None:
        return None

    _with_services(_settings(config), noop)
    console.print("database is up to date")


def main() -> None:  # pragma: no cover - console entry point
    sys.exit(app())
