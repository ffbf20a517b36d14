"""Each revocation row names the PostgreSQL transaction that wrote it, so replicas can read the
``revocations`` table by commit horizon instead of by id (ids are drawn before commit, and
transactions commit out of id order). See deputy.storage.grants.GrantRepository.revocations_after.

SQLite serialises writers, so there ids are in commit order and the column stays empty.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"

# pg_current_xact_id() (PostgreSQL 13+) is the 64-bit id of the writing transaction; its text form is a
# decimal that fits a BIGINT (epoch << 32 | xid).
WRITER_XID = sa.text("(pg_current_xact_id()::text)::bigint")


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    with op.batch_alter_table("revocations") as batch:
        batch.add_column(sa.Column("writer_xid", sa.BigInteger, nullable=True,
                                   server_default=WRITER_XID if postgres else None))
    op.create_index("ix_revocations_writer_xid", "revocations", ["writer_xid"])


def downgrade() -> None:
    op.drop_index("ix_revocations_writer_xid", table_name="revocations")
    with op.batch_alter_table("revocations") as batch:
        batch.drop_column("writer_xid")
