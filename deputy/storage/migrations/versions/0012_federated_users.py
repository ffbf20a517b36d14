"""Federated users (issue 14): a user signed in through an OpenID Provider, keyed by (issuer, ``sub``) —
OpenID Connect Core 1.0 §2 (``sub`` is unique within its issuer) and §5.7 (no other claim is a stable key, the
e-mail included) — with the profile the provider states at each sign-in, and a disabled mark for any user.

Existing users become ``source = 'local'`` and keep their password hashes. Every change is an added column or
index, which SQLite makes in place: rebuilding ``users`` (batch mode) would drop the table, and with foreign keys on
that cascades into ``login_sessions`` and ``consents``. For the same reason ``password_hash`` stays NOT NULL: a
federated user's holds a marker that is never an argon2 hash (deputy.storage.users.NO_PASSWORD).

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"

COLUMNS = ("source", "issuer", "subject", "email", "display_name", "groups", "claims", "profile_updated_at",
           "disabled_at")


def upgrade() -> None:
    op.add_column("users", sa.Column("source", sa.String(64), nullable=False, server_default="local"))
    op.add_column("users", sa.Column("issuer", sa.String(1024), nullable=True))
    op.add_column("users", sa.Column("subject", sa.String(255), nullable=True))
    op.add_column("users", sa.Column("email", sa.String(320), nullable=True))
    op.add_column("users", sa.Column("display_name", sa.String(256), nullable=True))
    op.add_column("users", sa.Column("groups", sa.JSON, nullable=False, server_default=sa.text("'[]'")))
    op.add_column("users", sa.Column("claims", sa.JSON, nullable=False, server_default=sa.text("'{}'")))
    op.add_column("users", sa.Column("profile_updated_at", sa.BigInteger, nullable=True))
    op.add_column("users", sa.Column("disabled_at", sa.BigInteger, nullable=True))
    # NULLs are distinct in a unique index on both backends: any number of local users (no issuer).
    op.create_index("uq_users_issuer_subject", "users", ["issuer", "subject"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_users_issuer_subject", table_name="users")
    for column in reversed(COLUMNS):
        op.drop_column("users", column)  # in place (SQLite 3.35+), for the reason the docstring gives
