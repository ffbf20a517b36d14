"""``deputy serve`` without the gateway's audit stage: the baseline of ``bench/audit_path.py``, nothing else.

Deputy has no setting that turns the audit of calls off (every forwarded call is recorded); the bench
builds the same application and removes the stage, so the difference it measures is the audit stage alone.
"""

from __future__ import annotations

import sys
from typing import Any

import deputy.app as deputy_app
from deputy.cli import app

_create_app = deputy_app.create_app


def create_app_without_audit(*args: Any, **kwargs: Any) -> deputy_app.DeputyApp:
    built = _create_app(*args, **kwargs)
    built.gateway.audit = None
    return built


if __name__ == "__main__":
    deputy_app.create_app = create_app_without_audit  # `deputy serve` imports it when it runs
    sys.argv = ["deputy", *sys.argv[1:]]
    app()
