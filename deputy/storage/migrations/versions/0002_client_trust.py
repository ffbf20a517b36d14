"""Client trust: status (active, pending, denied), key material for private_key_jwt,
RFC 7592 registration access tokens, registered metadata; the assertion ``jti`` replay cache.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"


def upgrade() -> None:
    with op.batch_alter_table("clients") as batch:
        batch.add_column(sa.Column("status", sa.String(16), nullable=False, server_default="active"))
        batch.add_column(sa.Column("jwks", sa.JSON))
        batch.add_column(sa.Column("jwks_uri", sa.Text))
        batch.add_column(sa.Column("registration_access_token_hash", sa.String(64)))
        batch.add_column(sa.Column("client_metadata", sa.JSON))
    op.create_table(
        "assertion_jtis",
        sa.Column("client_id", sa.String(255), primary_key=True),
        sa.Column("jti", sa.String(255), primary_key=True),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("assertion_jtis")
    with op.batch_alter_table("clients") as batch:
        for column in ("client_metadata", "registration_access_token_hash", "jwks_uri", "jwks", "status"):
            batch.drop_column(column)
