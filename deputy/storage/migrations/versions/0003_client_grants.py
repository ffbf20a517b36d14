"""Grants of clients acting for themselves (client credentials): ``grants.user_id`` holds a
client id there, so it is as wide as ``clients.client_id``; grants are looked up by user and
client when a consent is revoked.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"


def upgrade() -> None:
    with op.batch_alter_table("grants") as batch:
        batch.alter_column("user_id", type_=sa.String(255), existing_type=sa.String(64), existing_nullable=False)
    op.create_index("ix_grants_user_client", "grants", ["user_id", "client_id"])


def downgrade() -> None:
    op.drop_index("ix_grants_user_client", table_name="grants")
    with op.batch_alter_table("grants") as batch:
        batch.alter_column("user_id", type_=sa.String(64), existing_type=sa.String(255), existing_nullable=False)
