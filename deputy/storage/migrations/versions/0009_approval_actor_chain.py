"""Approvals are bound to the whole actor chain of the call they approve (RFC 8693 §4.1 ``act``).

``chain_hash`` is the hex SHA-256 of the canonical JSON (RFC 8785) of the ordered chain, current
actor first (:func:`deputy.storage.approvals.chain_hash`; ``[]`` for a call made without delegation).
Rows written before this revision keep NULL, which matches no chain: an approval given before the
upgrade cannot be used and the call is held again (fail closed).

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"


def upgrade() -> None:
    with op.batch_alter_table("approvals") as batch:
        batch.add_column(sa.Column("chain_hash", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("approvals") as batch:
        batch.drop_column("chain_hash")
