"""``deputy clients``: the OAuth clients Deputy knows."""

from __future__ import annotations

import secrets
from typing import Annotated

import typer
from rich.table import Table

from deputy.cli.common import ConfigOption, console, err, settings_or_exit, with_services

clients_app = typer.Typer(help="OAuth clients.", no_args_is_help=True)


@clients_app.command("add")
def clients_add(
    name: str,
    redirect_uri: Annotated[list[str], typer.Option("--redirect-uri", help="repeat for several")],
    config: ConfigOption = None,
    client_id: Annotated[str | None, typer.Option(help="default: random")] = None,
    confidential: Annotated[bool, typer.Option(help="issue a client secret (client_secret_basic)")] = False,
) -> None:
    """Register a client by hand."""
    settings = settings_or_exit(config)
    cid = client_id or secrets.token_hex(16)
    secret = secrets.token_urlsafe(32) if confidential else None
    with_services(settings, lambda s: s.clients.put(
        client_id=cid, client_name=name, redirect_uris=redirect_uri, source="cli",
        token_endpoint_auth_method="client_secret_basic" if confidential else "none", client_secret=secret))
    console.print(f"client_id: [bold]{cid}[/bold]")
    if secret:
        console.print(f"client_secret (shown once): [bold]{secret}[/bold]")


@clients_app.command("list")
def clients_list(config: ConfigOption = None) -> None:
    """List registered clients."""
    table = Table("client id", "name", "auth", "source", "redirect URIs")
    for c in with_services(settings_or_exit(config), lambda s: s.clients.list()):
        table.add_row(c.client_id, c.client_name, c.token_endpoint_auth_method, c.source, "\n".join(c.redirect_uris))
    console.print(table)


@clients_app.command("remove")
def clients_remove(client_id: str, config: ConfigOption = None) -> None:
    """Remove a client."""
    if not with_services(settings_or_exit(config), lambda s: s.clients.remove(client_id)):
        err.print(f"[red]no client {client_id}[/red]")
        raise typer.Exit(1)
    console.print(f"removed {client_id}")
