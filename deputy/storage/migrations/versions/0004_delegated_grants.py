"""Grants made by token exchange (RFC 8693) point at the grant of the token they came from,
so revoking Alice's authorization also revokes every token an agent obtained from it.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"


def upgrade() -> None:
    with op.batch_alter_table("grants") as batch:
        batch.add_column(sa.Column("parent_grant_id", sa.String(64), nullable=True))
    op.create_index("ix_grants_parent", "grants", ["parent_grant_id"])


def downgrade() -> None:
    op.drop_index("ix_grants_parent", table_name="grants")
    with op.batch_alter_table("grants") as batch:
        batch.drop_column("parent_grant_id")
