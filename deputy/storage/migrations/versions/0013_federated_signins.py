"""Sign-ins sent to an identity provider and waiting for its callback (issue 14; deputy.storage.federated_signins).

A row is keyed by the SHA-256 of its ``state`` (RFC 6749 §10.12) and bound to the browser that started it by the
SHA-256 of a random cookie (``browser_hash``); ``pending`` holds the nonce, the PKCE verifier (RFC 7636 §4.1),
``max_age`` and the pending authorization request it continues. Rows are deleted when used or expired.

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"


def upgrade() -> None:
    op.create_table(
        "federated_signins",
        sa.Column("state_hash", sa.String(64), primary_key=True),
        sa.Column("browser_hash", sa.String(64), nullable=False),
        sa.Column("idp", sa.String(64), nullable=False),
        sa.Column("pending", sa.JSON, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("federated_signins")
