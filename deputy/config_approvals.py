"""``[approvals]``: how long a held call's approval lives, and who may give one.

Its own module, below :mod:`deputy.config`, because storage applies it (:class:`deputy.storage.approvals.
ApprovalRepository`) and storage does not import the configuration; :mod:`deputy.config` reads the table into it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ApprovalSettings:
    """``[approvals]``: how long a held call's approval lives, and who may give one."""

    ttl: int = 15 * 60  # seconds from the call being held: to be decided and then used
    approvers: tuple[str, ...] = ()  # usernames; empty: any user (never the requesting one, unless policy says)

    def may_decide(self, username: str) -> bool:
        return not self.approvers or username in self.approvers
