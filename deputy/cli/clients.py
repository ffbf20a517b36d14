"""``deputy clients``: the OAuth clients Deputy knows, and whether it serves them.

``list`` and ``show`` never print a secret (only whether one is set); ``approve`` serves
a pending client; ``deny`` and ``remove`` also revoke every refresh-token family the
client holds, so what it was already given stops working too.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.markup import escape
from rich.table import Column, Table
from rich.text import Text

from deputy import bounded_json
from deputy.cli.common import ConfigOption, console, err, settings_or_exit, with_services
from deputy.cli.terminal_text import shown
from deputy.display_text import command_line
from deputy.services import Services

if TYPE_CHECKING:
    from deputy.config import Settings
    from deputy.storage.clients import Client

clients_app = typer.Typer(help="OAuth clients.", no_args_is_help=True)
ClientId = Annotated[str, typer.Argument(help="the client_id")]
STATUS_STYLE = {"active": "green", "pending": "yellow", "denied": "red"}


@clients_app.command("add")
def clients_add(
    name: str,
    redirect_uri: Annotated[list[str], typer.Option("--redirect-uri", help="repeat for several")],
    config: ConfigOption = None,
    client_id: Annotated[str | None, typer.Option(help="default: random")] = None,
    confidential: Annotated[bool, typer.Option(help="issue a client secret (client_secret_basic)")] = False,
    jwks_file: Annotated[Path | None, typer.Option(
        "--jwks-file", help="JWK Set of the client's public keys: it authenticates with private_key_jwt")] = None,
) -> None:
    """Register a client by hand."""
    from deputy.oauth.client_metadata import public_jwks
    from deputy.oauth.errors import InvalidClientMetadata, InvalidRedirectUri
    from deputy.oauth.redirect_uris import check_redirect_uris, refuse_deputy_host

    if confidential and jwks_file is not None:
        err.print("[red]choose one: --confidential (a secret) or --jwks-file (private_key_jwt)[/red]")
        raise typer.Exit(2)
    jwks: dict[str, Any] | None = None
    if jwks_file is not None:
        try:
            jwks = public_jwks(bounded_json.loads(jwks_file.read_text()))
        except (OSError, ValueError) as exc:
            err.print(f"[red]{jwks_file}: not a JWK Set: {exc}[/red]")
            raise typer.Exit(2) from None
        except InvalidClientMetadata as exc:
            err.print(f"[red]{jwks_file}: {exc.description}[/red]")
            raise typer.Exit(2) from None
    settings = settings_or_exit(config)
    try:  # the rules dynamic registration applies, including: never on Deputy's own host
        refuse_deputy_host(check_redirect_uris(redirect_uri, "native"), settings.public_url)
    except InvalidRedirectUri as exc:
        err.print(f"[red]--redirect-uri {escape(exc.description)}[/red]")
        raise typer.Exit(2) from None
    cid = client_id or secrets.token_hex(16)
    secret = secrets.token_urlsafe(32) if confidential else None
    method = "client_secret_basic" if confidential else "private_key_jwt" if jwks else "none"
    async def add(s: Services) -> None:
        await s.clients.put(client_id=cid, client_name=name, redirect_uris=redirect_uri, source="cli",
                            token_endpoint_auth_method=method, client_secret=secret, jwks=jwks)
        await s.record("client.registered", client_id=cid, source="cli", status="active",
                       redirect_uris=list(redirect_uri), token_endpoint_auth_method=method)

    with_services(settings, add)
    console.print(f"added client {escape(name)!r}: client_id [bold]{escape(cid)}[/bold] ({method})")
    if secret:
        console.print(f"client_secret (shown once): [bold]{secret}[/bold]")


@clients_app.command("list")
def clients_list(
    config: ConfigOption = None,
    status: Annotated[str | None, typer.Option(help="only clients in this status: active, pending or denied")] = None,
) -> None:
    """List the clients, with their status and where they came from."""
    from deputy.storage.clients import STATUSES

    if status is not None and status not in STATUSES:
        err.print(f"[red]--status must be one of {', '.join(STATUSES)}[/red]")
        raise typer.Exit(2)
    found = with_services(settings_or_exit(config), lambda s: s.clients.list(status))
    if not found:
        console.print("no clients" + (f" with status {status}" if status else ""))
        return
    # Ids are what an admin copies into the next command: never wrapped.
    table = Table(Column("client id", no_wrap=True), "name", "status", "source", "auth", "redirect URIs")
    for c in found:  # names, URIs (and ids from metadata documents) are the client's words: shown, never markup
        table.add_row(shown(c.client_id), shown(c.client_name), _status(c.status), shown(c.source),
                      shown(c.token_endpoint_auth_method), _lines(c.redirect_uris))
    console.print(table)


@clients_app.command("show")
def clients_show(client_id: ClientId, config: ConfigOption = None) -> None:
    """Everything Deputy holds about one client, except its secrets."""
    client = with_services(settings_or_exit(config), lambda s: s.clients.get(client_id))
    if client is None:
        _unknown(client_id)
    table = Table(Column("field", no_wrap=True), Column("value", overflow="fold"), show_header=False)
    for field, value in _fields(client):  # a metadata document names fields too
        table.add_row(shown(field), value if isinstance(value, Text) else shown(value))
    console.print(table)


@clients_app.command("approve")
def clients_approve(client_id: ClientId, config: ConfigOption = None) -> None:
    """Serve a pending, denied or removed (but still configured) client from now on."""
    async def approve(s: Services) -> bool:
        if not await s.clients.set_status(client_id, "active"):
            return False
        await s.record("client.approved", client_id=client_id, by="cli")
        return True

    if not with_services(settings_or_exit(config), approve):
        _unknown(client_id)
    console.print(f"approved {escape(client_id)}: it may sign users in now")


@clients_app.command("deny")
def clients_deny(client_id: ClientId, config: ConfigOption = None) -> None:
    """Refuse a client; what it was already granted is revoked."""

    async def deny(s: Services) -> int | None:
        # One transaction: once this returns no token of the client works and none can be issued to it.
        revoked = await s.grants.withdraw_client(client_id, "denied", "client denied by an administrator")
        if revoked is not None:
            await s.record("admin.action", action="clients.deny", client_id=client_id, grants_revoked=revoked)
        return revoked

    settings = settings_or_exit(config)
    revoked = with_services(settings, deny)
    if revoked is None:
        _unknown(client_id)
    console.print(f"denied {escape(client_id)}; revoked {revoked} grant(s)")
    if _declared(settings, client_id):
        console.print(f"{escape(CONFIG_ENTRY)} in the configuration file does not serve it again at start: it stays "
                      f"denied until `{escape(_approve_command(client_id))}`")


@clients_app.command("remove")
def clients_remove(client_id: ClientId, config: ConfigOption = None) -> None:
    """Remove a client; what it was granted is revoked."""

    async def remove(s: Services) -> int | None:
        # One transaction: once this returns no token of the client works and none can be issued to it.
        revoked = await s.grants.withdraw_client(client_id, "removed", "client removed by an administrator")
        if revoked is not None:
            await s.record("client.removed", client_id=client_id, by="cli", grants_revoked=revoked)
        return revoked

    settings = settings_or_exit(config)
    revoked = with_services(settings, remove)
    if revoked is None:
        _unknown(client_id)
    console.print(f"removed {escape(client_id)}; revoked {revoked} grant(s)")
    if _declared(settings, client_id):
        console.print(f"{escape(CONFIG_ENTRY)} is still in the configuration file: Deputy keeps the client removed "
                      f"(status 'removed') and does not recreate it at start; delete the entry, or serve the client "
                      f"again with `{escape(_approve_command(client_id))}`")


CONFIG_ENTRY = "its [[clients]] entry"


def _approve_command(client_id: str) -> str:
    """The command that serves ``client_id`` again, its id quoted for the shell it is pasted into."""
    return command_line("deputy", "clients", "approve", client_id)


def _declared(settings: Settings, client_id: str) -> bool:
    return any(c.client_id == client_id for c in settings.clients)


def _unknown(client_id: str) -> NoReturn:
    err.print(f"[red]no client {escape(client_id)}[/red]")
    raise typer.Exit(1)


def _status(status: str) -> Text:
    return shown(status, STATUS_STYLE.get(status, "white"))


def _lines(values: tuple[str, ...]) -> Text:
    """One value a line: each shown, so none can end its line early or forge another."""
    return Text("\n").join(shown(value) for value in values)


def _fields(client: Client) -> list[tuple[str, str | Text]]:
    rows: list[tuple[str, str | Text]] = [
        ("client_id", client.client_id),
        ("client_name", client.client_name),
        ("status", _status(client.status)),
        ("source", client.source),
        ("created_at", str(client.created_at)),
        ("application_type", client.application_type),
        ("token_endpoint_auth_method", client.token_endpoint_auth_method),
        ("grant_types", ", ".join(client.grant_types)),
        ("redirect_uris", _lines(client.redirect_uris)),
        ("client secret", "set (hashed)" if client.client_secret_hash else "none"),
        ("registration access token", "set (hashed)" if client.registration_access_token_hash else "none"),
    ]
    if client.jwks_uri:
        rows.append(("jwks_uri", client.jwks_uri))
    if client.jwks:
        kids = [str(k.get("kid", "?")) + f" ({k.get('kty')})" for k in client.jwks.get("keys", [])]
        rows.append(("jwks", ", ".join(kids)))
    for key, value in sorted(client.client_metadata.items()):
        if key == "software_statement":
            value = "present (signed JWT)"
        rows.append((key, value if isinstance(value, str) else json.dumps(value)))
    return rows
