"""A grant made by token exchange (RFC 8693 §1.1, §2.1) records the grant of its actor token beside the
subject's (``parent_grant_id``, migration 0004), so revoking the actor's own token also revokes what it
obtained by exchange. See deputy.storage.exchanged_grants.

Grants exchanged before this migration have no recorded actor: nothing else says which token acted, so they
depend on their subject only, as before, until they expire (``delegation.token_ttl``).

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"


def upgrade() -> None:
    with op.batch_alter_table("grants") as batch:
        batch.add_column(sa.Column("actor_grant_id", sa.String(64), nullable=True))
    op.create_index("ix_grants_actor", "grants", ["actor_grant_id"])


def downgrade() -> None:
    op.drop_index("ix_grants_actor", table_name="grants")
    with op.batch_alter_table("grants") as batch:
        batch.drop_column("actor_grant_id")
