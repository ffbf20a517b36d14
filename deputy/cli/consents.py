"""``deputy consents``: what each user has let each client do, and taking it back.

Revoking a consent also revokes the refresh-token families it produced and their
access tokens (the gateway refuses them within its revocation staleness bound);
the client must ask the user again. Her connections to ``credentials = "oauth"``
upstreams for that server (all of them, without ``--server``) are revoked too: their
tokens revoked at the upstream and deleted (``connection.revoked``, ``consent_revoked``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from deputy.cli.common import ConfigOption, console, err, settings_or_exit, with_services
from deputy.cli.terminal_text import line, shown
from deputy.services import Services

if TYPE_CHECKING:
    from deputy.config import Settings
    from deputy.storage.consents import Consent, ConsentRevocation
    from deputy.storage.users import User

consents_app = typer.Typer(help="Consents users gave to clients.", no_args_is_help=True)

UserOption = Annotated[str, typer.Option("--user", help="username")]


def _server_name(settings: Settings, resource: str) -> str:
    server = settings.server_for_resource(resource)
    return server.name if server is not None else resource


async def _user_named(services: Services, name: str) -> User | None:
    return next((u for u in await services.users.list() if u.username == name), None)


@consents_app.command("list")
def consents_list(config: ConfigOption = None,
                  user: Annotated[str | None, typer.Option("--user", help="only this user")] = None) -> None:
    """List remembered consents: user, client, server, scopes."""
    settings = settings_or_exit(config)

    async def work(services: Services) -> tuple[dict[str, str], list[Consent]] | None:
        names = {u.user_id: u.username for u in await services.users.list()}
        if user is None:
            return names, await services.consents.list()
        found = await _user_named(services, user)
        return (names, await services.consents.list(found.user_id)) if found is not None else None

    result = with_services(settings, work)
    if result is None:
        err.print(line("no user ", user, style="red"))
        raise typer.Exit(1)
    names, consents = result
    table = Table("user", "client id", "server", "scopes", "granted")
    for c in consents:  # a client id can be a metadata document's URL, chosen by whoever hosts it
        table.add_row(*(shown(v) for v in (names.get(c.user_id, c.user_id), c.client_id,
                                           _server_name(settings, c.resource), c.scope)),
                      time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(c.granted_at)) + "Z")
    console.print(table)


@consents_app.command("revoke")
def consents_revoke(
    user: UserOption,
    client: Annotated[str, typer.Option("--client", help="client id")],
    config: ConfigOption = None,
    server: Annotated[str | None, typer.Option("--server", help="only for this server (default: all)")] = None,
) -> None:
    """Revoke a user's consent for a client, and every token it produced."""
    from deputy.config import SERVER_NAME

    settings = settings_or_exit(config)
    if server is not None and not SERVER_NAME.match(server):
        err.print(line(repr(server), " is not a server name", style="red"))
        raise typer.Exit(2)
    resource = settings.resource_of(server) if server is not None else None

    async def work(services: Services) -> tuple[ConsentRevocation, int] | None:
        found = await _user_named(services, user)
        if found is None:
            return None
        revoked = await services.consents.revoke(found.user_id, client, resource)
        await services.record("consent.revoked", user=found.user_id, client_id=client, resource=resource,
                              consents=revoked.consents, grants_revoked=revoked.grants, by="cli")
        disconnected = 0
        if revoked.consents:
            # Her Deputy consent taken back: her upstream tokens for that server (or all) go too.
            if server is None:
                disconnected = await services.connections.disconnect_user(found.user_id, "consent_revoked")
            elif await services.connections.disconnect(found.user_id, server, "consent_revoked"):
                disconnected = 1
        return revoked, disconnected

    result = with_services(settings, work)
    if result is None:
        err.print(line("no user ", user, style="red"))
        raise typer.Exit(1)
    outcome, disconnected = result
    where = f" for server {server}" if server is not None else ""
    if outcome.consents == 0 and outcome.grants == 0:
        err.print(line(user, " has no consent or tokens for client ", client, where, style="red"))
        raise typer.Exit(1)
    console.print(line(f"revoked {outcome.consents} consent(s) of ", user, " for client ", client,
                       f"{where}; {outcome.grants} token family(ies) revoked",
                       f"; {disconnected} upstream connection(s) revoked" if disconnected else ""))
