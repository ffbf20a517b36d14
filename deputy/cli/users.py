"""``deputy users``: who signs in — local users (argon2id password hashes) and users of an identity provider
(OIDC federation, issue 14: created at first sign-in, keyed by issuer and ``sub``); disabling and enabling any.

Names, e-mails and groups of federated users are the identity provider's words: printed through
:func:`deputy.cli.terminal_text.shown`, and cut to a bound, so that they neither act on the terminal nor flood it.
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Column, Table

from deputy.cli.common import ConfigOption, console, err, fail, settings_or_exit, with_services
from deputy.cli.terminal_text import line, shown
from deputy.services import Services

users_app = typer.Typer(help="Users who sign in: local ones, and those of identity providers.", no_args_is_help=True)

FIELD_SHOWN = 64  # characters of one e-mail or group
GROUPS_SHOWN = 8  # groups listed per user; the rest counted


def bounded(text: str, limit: int = FIELD_SHOWN) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def groups_shown(groups: tuple[str, ...]) -> str:
    listed = ", ".join(bounded(g) for g in groups[:GROUPS_SHOWN])
    return listed + (f" (+{len(groups) - GROUPS_SHOWN} more)" if len(groups) > GROUPS_SHOWN else "")


@users_app.command("add")
def users_add(name: str, config: ConfigOption = None,
              password: Annotated[str | None, typer.Option(help="default: prompt")] = None) -> None:
    """Add a local user (password hashed with argon2id; '@' is kept for users of identity providers)."""
    from deputy.storage.users import User, UserExists, UsernameRefused

    settings = settings_or_exit(config)
    secret = password or typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    async def add(services: Services) -> User:
        added = await services.users.add(name, secret)
        await services.record("admin.action", action="users.add", username=added.username, user_id=added.user_id)
        return added

    try:
        user = with_services(settings, add)
    except UserExists:
        err.print(line("user ", name, " already exists", style="red"))
        raise typer.Exit(1) from None
    except UsernameRefused as exc:
        fail(2, str(exc))
    console.print(line("added user ", shown(user.username, style="bold"), f" ({user.user_id})"))


@users_app.command("list")
def users_list(config: ConfigOption = None) -> None:
    """List users: where each signs in (local, or the identity provider's name), e-mail, groups, disabled."""
    found = with_services(settings_or_exit(config), lambda s: s.users.list())
    if not found:
        console.print("no users")
        return
    table = Table(Column("username", no_wrap=True), "source", "e-mail", "groups", "disabled",
                  Column("user id", no_wrap=True))
    for user in found:  # all but the ids may be an identity provider's words: shown, bounded, never markup
        table.add_row(shown(bounded(user.username, 128)), shown(user.source), shown(bounded(user.email or "")),
                      shown(groups_shown(user.groups)), shown("yes", style="red") if user.disabled else "",
                      user.user_id)
    console.print(table)


@users_app.command("show")
def users_show(name: str, config: ConfigOption = None) -> None:
    """One user whole: for a federated one, her identity (issuer and ``sub``) — what ``[approvals]
    approver_subjects`` names, since her username is only a first-come label — and every group she has."""
    user = with_services(settings_or_exit(config), lambda s: s.users.find(name))
    if user is None:
        fail(1, f"no user named {name}")
    fields: list[tuple[str, str]] = [("username", user.username), ("user id", user.user_id), ("source", user.source)]
    if not user.is_local:
        fields += [("issuer", user.issuer or ""), ("sub", user.subject or ""), ("name", user.display_name or ""),
                   ("e-mail", user.email or ""), ("groups", ", ".join(user.groups))]
    fields.append(("disabled", "yes" if user.disabled else "no"))
    table = Table(Column(no_wrap=True), Column(overflow="fold"), show_header=False, box=None)
    for label, value in fields:  # all but the id may be an identity provider's words: shown, never markup
        table.add_row(label, shown(value))
    console.print(table)
    if not user.is_local and user.subject:
        console.print(line("to name her as an approver: approver_subjects = { ", shown(user.source), " = [",
                           shown(json.dumps(user.subject)), "] }"))


@users_app.command("disable")
def users_disable(name: str, config: ConfigOption = None) -> None:
    """Refuse the user's next sign-in (password or identity provider), end her sessions, revoke all her grants and
    her connections to upstreams (their tokens revoked at the upstream, deleted from the vault)."""
    async def disable(services: Services) -> tuple[int, int] | None:
        revoked = await services.users.disable(name, services.grants)
        if revoked is None:
            return None
        user = await services.users.find(name)
        await services.record("user.disabled", username=name, user_id=user.user_id if user else None,
                              revoked_grants=revoked)
        # Her upstream tokens would otherwise stay usable at the upstreams themselves.
        connections = await services.connections.disconnect_user(user.user_id, "user_disabled") if user else 0
        return revoked, connections

    outcome = with_services(settings_or_exit(config), disable)
    if outcome is None:
        fail(1, f"no user named {name}")
    revoked, connections = outcome
    console.print(line("disabled ", shown(name, style="bold"), f"; revoked {revoked} grant(s) and {connections} "
                       "upstream connection(s)"))


@users_app.command("enable")
def users_enable(name: str, config: ConfigOption = None) -> None:
    """Let a disabled user sign in again; grants revoked when she was disabled stay revoked."""
    async def enable(services: Services) -> bool:
        enabled = await services.users.enable(name)
        if enabled:
            user = await services.users.find(name)
            await services.record("user.enabled", username=name, user_id=user.user_id if user else None)
        return enabled

    if not with_services(settings_or_exit(config), enable):
        fail(1, f"no user named {name}")
    console.print(line("enabled ", shown(name, style="bold")))
