"""Human approvals bound to one exact call (server, tool, arguments), a user and an agent; single use.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"


def upgrade() -> None:
    op.create_table(
        "approvals",
        sa.Column("approval_id", sa.String(64), primary_key=True),
        sa.Column("server", sa.String(255), nullable=False),
        sa.Column("tool", sa.String(255), nullable=False),
        sa.Column("call_hash", sa.String(64), nullable=False),
        sa.Column("arguments", sa.JSON, nullable=False),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("agent", sa.String(255), nullable=False),
        sa.Column("actors", sa.JSON),
        sa.Column("decision_id", sa.String(64)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.Column("decided_by", sa.String(255)),
        sa.Column("decided_at", sa.BigInteger),
        sa.Column("used_at", sa.BigInteger),
    )
    op.create_index("ix_approvals_call", "approvals", ["call_hash", "user_id", "agent"])


def downgrade() -> None:
    op.drop_index("ix_approvals_call", table_name="approvals")
    op.drop_table("approvals")
