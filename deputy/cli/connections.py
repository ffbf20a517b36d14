"""``deputy connections``: users' connections to ``credentials = "oauth"`` upstreams, and ending them.

Listing never shows a token (nor opens one: no vault key is needed to list). Revoking goes through the same path as
a user's own "Disconnect" (:meth:`deputy.connections.service.Connections.disconnect`): the upstream's tokens are
revoked there when it offers RFC 7009, deleted from the vault, and recorded. Issuers and scopes are the upstream's
words: printed through :func:`deputy.cli.terminal_text.shown`, bounded.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Column, Table

from deputy.cli.common import ConfigOption, console, fail, settings_or_exit, with_services
from deputy.cli.terminal_text import line, shown
from deputy.services import Services

if TYPE_CHECKING:
    from deputy.storage.connections import StoredConnection

connections_app = typer.Typer(help="Users' connections to upstreams with their own authorization server.",
                              no_args_is_help=True)

UserFilter = Annotated[str | None, typer.Option("--user", help="username")]
ServerFilter = Annotated[str | None, typer.Option("--server", help="server name")]
FIELD_SHOWN = 96  # characters of an issuer or scope
REVOKED_BY = "cli"


def _when(seconds: int | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds)) + "Z" if seconds is not None else ""


def _bounded(text: str | None) -> str:
    text = text or ""
    return text if len(text) <= FIELD_SHOWN else text[:FIELD_SHOWN - 1] + "…"


def _check_server(server: str | None) -> None:
    from deputy.config import SERVER_NAME

    if server is not None and not SERVER_NAME.match(server):
        fail(2, f"{server!r} is not a server name")


class NoSuchUser(Exception):
    pass


async def _user_id(services: Services, username: str | None) -> str | None:
    if username is None:
        return None
    user = await services.users.find(username)
    if user is None:
        raise NoSuchUser(username)
    return user.user_id


@connections_app.command("list")
def connections_list(config: ConfigOption = None, user: UserFilter = None, server: ServerFilter = None) -> None:
    """List connections: user, server, status, issuer, scope, created, refreshed, expires (never a token)."""
    from deputy.storage.connections import ConnectionRepository

    _check_server(server)
    settings = settings_or_exit(config)

    async def work(services: Services) -> tuple[dict[str, str], list[StoredConnection]]:
        names = {u.user_id: u.username for u in await services.users.list()}
        found = await ConnectionRepository(services.database.engine).list(await _user_id(services, user), server)
        return names, found

    try:
        names, found = with_services(settings, work)
    except NoSuchUser:
        fail(1, f"no user named {user}")
    if not found:
        console.print("no connections")
        return
    table = Table(Column("user", no_wrap=True), "server", "status", "issuer", "scope", "created", "refreshed",
                  "expires")
    for c in found:
        table.add_row(shown(names.get(c.user_id, c.user_id)), shown(c.server),
                      shown(c.status, style="red" if c.status != "active" else ""), shown(_bounded(c.issuer)),
                      shown(_bounded(c.scope)), _when(c.created_at), _when(c.refreshed_at), _when(c.expires_at))
    console.print(table)


@connections_app.command("revoke")
def connections_revoke(config: ConfigOption = None, user: UserFilter = None, server: ServerFilter = None) -> None:
    """Disconnect: revoke the upstream tokens (RFC 7009 where offered) and delete them; --user, --server or both."""
    from deputy.storage.connections import ConnectionRepository

    if user is None and server is None:
        fail(2, "give --user, --server or both")
    _check_server(server)
    settings = settings_or_exit(config)

    async def work(services: Services) -> int:
        user_id = await _user_id(services, user)
        if user_id is not None and server is not None:
            return int(await services.connections.disconnect(user_id, server, REVOKED_BY))
        if user_id is not None:
            return await services.connections.disconnect_user(user_id, REVOKED_BY)
        revoked = 0
        for c in await ConnectionRepository(services.database.engine).list(server=server):
            revoked += int(await services.connections.disconnect(c.user_id, c.server, REVOKED_BY))
        return revoked

    try:
        revoked = with_services(settings, work)
    except NoSuchUser:
        fail(1, f"no user named {user}")
    whose = " ".join([*(["of", user] if user is not None else []), *(["to", server] if server is not None else [])])
    if revoked == 0:
        fail(1, f"no connection {whose}")
    console.print(line(f"revoked {revoked} connection(s) ", whose))
