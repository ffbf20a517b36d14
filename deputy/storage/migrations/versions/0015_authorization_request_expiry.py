"""An index on the expiry of pending authorization requests (deputy.storage.sessions).

Each ``GET /authorize`` that stores a pending request first deletes the expired ones (``expires_at < now``); without
an index every such delete reads the whole table, so each new request costs more the more are waiting.

Revision ID: 0015
Revises: 0014
"""

from alembic import op

revision = "0015"
down_revision = "0014"


def upgrade() -> None:
    op.create_index("ix_authorization_requests_expires_at", "authorization_requests", ["expires_at"])


def downgrade() -> None:
    op.drop_index("ix_authorization_requests_expires_at", table_name="authorization_requests")
