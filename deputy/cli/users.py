"""``deputy users``: local users who sign in on the login page (argon2id password hashes)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from deputy.cli.common import ConfigOption, console, err, settings_or_exit, with_services
from deputy.services import Services

users_app = typer.Typer(help="Local users who sign in on the login page.", no_args_is_help=True)


@users_app.command("add")
def users_add(name: str, config: ConfigOption = None,
              password: Annotated[str | None, typer.Option(help="default: prompt")] = None) -> None:
    """Add a local user (password hashed with argon2id)."""
    from deputy.storage.users import User, UserExists

    settings = settings_or_exit(config)
    secret = password or typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    async def add(services: Services) -> User:
        added = await services.users.add(name, secret)
        await services.record("admin.action", action="users.add", username=added.username, user_id=added.user_id)
        return added

    try:
        user = with_services(settings, add)
    except UserExists:
        err.print(f"[red]user {name} already exists[/red]")
        raise typer.Exit(1) from None
    console.print(f"added user [bold]{user.username}[/bold] ({user.user_id})")


@users_app.command("list")
def users_list(config: ConfigOption = None) -> None:
    """List local users."""
    table = Table("username", "user id")
    for user in with_services(settings_or_exit(config), lambda s: s.users.list()):
        table.add_row(user.username, user.user_id)
    console.print(table)
