"""``deputy approvals``: calls held for a human approval, and approving or denying them.

An approval covers one exact call (server, tool, arguments) by one user through one
agent, and is used once; the approver must be another user than the one whose call it is
(unless the policy said ``@approval("self")``) and, when ``[approvals]`` names approvers, one of them
(:meth:`~deputy.config_approvals.ApprovalSettings.may_decide`). ``--as`` finds the user by username, but
what decides is who she is: a local user named in ``approvers``, or a federated one by her provider's groups
(``approver_groups``) or her ``sub`` (``approver_subjects``) — never a federated username, a first-come label.
"""

from __future__ import annotations

import json
import time
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Column, Table

from deputy.cli.common import ConfigOption, console, err, settings_or_exit, with_services
from deputy.cli.terminal_text import line, shown
from deputy.services import Services

# The storage (SQLAlchemy, the migrations) is imported by the commands that open it, not by `deputy --help`.
if TYPE_CHECKING:
    from deputy.storage.approvals import Approval, ApprovalRefused
    from deputy.storage.users import User

# deputy.storage.approvals.Status's values, for --status: typer reads every command's options at each start, and
# importing the storage for them would cost every command a second (tests/unit/test_lazy_imports.py keeps them equal).
STATUS_NAMES = ("pending", "approved", "denied", "used", "expired")
StatusName = StrEnum("StatusName", {name: name for name in STATUS_NAMES})  # type: ignore[misc]

approvals_app = typer.Typer(help="Calls held for a human approval.", no_args_is_help=True)

ApproverOption = Annotated[str, typer.Option("--as", help="the approver's username")]
ARGUMENTS_SHOWN = 60

REFUSALS = {
    "unknown": "no approval {id}",
    "expired": "approval {id} has expired; the call must be made again for a new approval",
    "own_request": "{name} cannot decide on their own request; another user must",
    "decided": "approval {id} is already {status}",
    "not_approver": "{name} is not one of the configured approvers ([approvals] approvers, approver_groups, "
                    "approver_subjects)",
}


def _when(seconds: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(seconds)) + "Z"


def _arguments(approval: Approval) -> str:
    text = json.dumps(approval.arguments, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= ARGUMENTS_SHOWN else text[:ARGUMENTS_SHOWN - 1] + "…"


@approvals_app.command("list")
def approvals_list(config: ConfigOption = None,
                   status: Annotated[StatusName | None, typer.Option("--status", help="only these")] = None) -> None:
    """List approvals, newest first: the call, whose it is, its status and expiry."""
    from deputy.storage.approvals import Status

    settings = settings_or_exit(config)

    async def work(services: Services) -> tuple[dict[str, str], list[Approval]]:
        names = {u.user_id: u.username for u in await services.users.list()}
        return names, await services.approvals.list(Status(status) if status is not None else None)

    names, approvals = with_services(settings, work)
    table = Table(Column("id", no_wrap=True), "server", "tool", "arguments", "user", "agent", "status",
                  Column("expires", no_wrap=True))
    for a in approvals:  # the tool, its arguments and the agent are the agent's words: shown, never markup
        table.add_row(*(shown(v) for v in (a.approval_id, a.server, a.tool, _arguments(a),
                                           names.get(a.user_id, a.user_id), a.agent, a.status)),
                      _when(a.expires_at))
    console.print(table, soft_wrap=True)


def _decide(config: ConfigOption, approval_id: str, approver: str, approve: bool) -> None:
    from deputy.storage.approvals import ApprovalRefused

    settings = settings_or_exit(config)

    async def work(services: Services) -> Approval | ApprovalRefused | None:
        user: User | None = next((u for u in await services.users.list() if u.username == approver), None)
        if user is None:
            return None
        try:
            return await services.decide_approval(approval_id, user, approve)
        except ApprovalRefused as refused:
            return refused

    outcome = with_services(settings, work)
    if outcome is None:
        err.print(line("no user ", approver, style="red"))
        raise typer.Exit(1)
    if isinstance(outcome, ApprovalRefused):
        status = outcome.approval.status if outcome.approval is not None else ""
        err.print(line(REFUSALS[outcome.reason].format(id=approval_id, name=approver, status=status), style="red"))
        raise typer.Exit(1)
    console.print(line(outcome.status, " ", outcome.tool, " on ", outcome.server, " with ", _arguments(outcome),
                       f" (approval {outcome.approval_id}, by ", approver, ")"), soft_wrap=True)


@approvals_app.command("approve")
def approvals_approve(approval_id: Annotated[str, typer.Argument(metavar="ID")], approver: ApproverOption,
                      config: ConfigOption = None) -> None:
    """Approve a held call: the identical call may then proceed, once, before the approval expires."""
    _decide(config, approval_id, approver, approve=True)


@approvals_app.command("deny")
def approvals_deny(approval_id: Annotated[str, typer.Argument(metavar="ID")], approver: ApproverOption,
                   config: ConfigOption = None) -> None:
    """Deny a held call: it stays held, and calling it again asks for a new approval."""
    _decide(config, approval_id, approver, approve=False)
