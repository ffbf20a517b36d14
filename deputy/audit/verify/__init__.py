"""Verify a whole audit log, in the database or in an exported file, from its record bytes up, relative to what
the verifier trusts: the log's key (followed through hand-overs) and anchors kept outside the log.

One concept a module: :mod:`~deputy.audit.verify.report` (the result), :mod:`~deputy.audit.verify.record_checks`
(each leaf), :mod:`~deputy.audit.verify.tree` (the tree and the checkpoints), :mod:`~deputy.audit.verify.anchors`
(trusted checkpoints and witnesses' latest), :mod:`~deputy.audit.verify.witnesses` (cosignatures and quorum),
:mod:`~deputy.audit.verify.database` and :mod:`~deputy.audit.verify.file` (the two sources), and
:mod:`~deputy.audit.verify.readonly` (opening the database without changing anything).
"""

from deputy.audit.verify.anchors import Anchor, AnchorError, fetch_witnessed, trusted_checkpoint
from deputy.audit.verify.database import BATCH, verify_database
from deputy.audit.verify.file import EXPORT_FORMAT, open_header, verify_file
from deputy.audit.verify.record_checks import record_problem
from deputy.audit.verify.report import Problem, VerifyError, VerifyReport

__all__ = [
    "BATCH",
    "EXPORT_FORMAT",
    "Anchor",
    "AnchorError",
    "Problem",
    "VerifyError",
    "VerifyReport",
    "fetch_witnessed",
    "open_header",
    "record_problem",
    "trusted_checkpoint",
    "verify_database",
    "verify_file",
]
