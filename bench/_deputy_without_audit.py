"""``deputy serve`` whose gateway records no call: the baseline of ``bench/audit_path.py``, nothing else.

Deputy has no setting that turns the audit of calls off (every forwarded call is recorded, and the gateway
cannot be built without its audit stage); the bench builds the same application and swaps the stage for one
that records nothing (:class:`RecordsNothing`), so the difference it measures is the recording alone: the
decision appended and committed before the call, the outcome measured and appended after it.
"""

from __future__ import annotations

import sys
from typing import Any

import deputy.app as deputy_app
from deputy.cli import app
from deputy.gateway.audit_stage import AuditStage
from deputy.gateway.jsonrpc import McpMessage

_create_app = deputy_app.create_app


class RecordsNothing(AuditStage):
    """The audit stage with nothing to record: the gateway takes the path of a call it does not record."""

    @staticmethod
    def records(message: McpMessage) -> bool:
        return False


def create_app_without_audit(*args: Any, **kwargs: Any) -> deputy_app.DeputyApp:
    built = _create_app(*args, **kwargs)
    stage = built.gateway.audit
    built.gateway.audit = RecordsNothing(stage.log, stage.arguments)
    return built


if __name__ == "__main__":
    deputy_app.create_app = create_app_without_audit  # `deputy serve` imports it when it runs
    sys.argv = ["deputy", *sys.argv[1:]]
    app()
