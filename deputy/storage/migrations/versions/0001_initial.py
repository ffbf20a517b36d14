"""Initial schema: users, clients, login sessions, authorization requests and codes,
grants (token families), refresh tokens, revocations, consents.

Revision ID: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None


def _time(name: str, nullable: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.BigInteger, nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("user_id", sa.String(64), primary_key=True),
        sa.Column("username", sa.String(128), nullable=False, unique=True),
        sa.Column("password_hash", sa.Text, nullable=False),
        _time("created_at"),
    )
    op.create_table(
        "clients",
        sa.Column("client_id", sa.String(255), primary_key=True),
        sa.Column("client_secret_hash", sa.Text),
        sa.Column("client_name", sa.String(255), nullable=False),
        sa.Column("redirect_uris", sa.JSON, nullable=False),
        sa.Column("grant_types", sa.JSON, nullable=False),
        sa.Column("token_endpoint_auth_method", sa.String(64), nullable=False),
        sa.Column("application_type", sa.String(16), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        _time("created_at"),
    )
    op.create_table(
        "login_sessions",
        sa.Column("session_hash", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.String(64), sa.ForeignKey("users.user_id", ondelete="CASCADE"), nullable=False),
        _time("auth_time"),
        _time("expires_at"),
    )
    op.create_table(
        "authorization_requests",
        sa.Column("request_id", sa.String(64), primary_key=True),
        sa.Column("client_id", sa.String(255), nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        _time("expires_at"),
    )
    op.create_table(
        "grants",
        sa.Column("grant_id", sa.String(64), primary_key=True),
        sa.Column("client_id", sa.String(255), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("resource", sa.Text, nullable=False),
        sa.Column("scope", sa.Text, nullable=False),
        _time("auth_time"),
        _time("created_at"),
        _time("revoked_at", nullable=True),
        sa.Column("revoked_reason", sa.String(64)),
    )
    op.create_table(
        "authorization_codes",
        sa.Column("code_hash", sa.String(64), primary_key=True),
        sa.Column("grant_id", sa.String(64), sa.ForeignKey("grants.grant_id", ondelete="CASCADE"), nullable=False),
        sa.Column("client_id", sa.String(255), nullable=False),
        sa.Column("redirect_uri", sa.Text, nullable=False),
        sa.Column("code_challenge", sa.String(128), nullable=False),
        _time("expires_at"),
        _time("consumed_at", nullable=True),
    )
    op.create_table(
        "refresh_tokens",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("grant_id", sa.String(64), sa.ForeignKey("grants.grant_id", ondelete="CASCADE"), nullable=False),
        _time("expires_at"),
        _time("used_at", nullable=True),
    )
    op.create_index("ix_refresh_tokens_grant", "refresh_tokens", ["grant_id"])
    op.create_table(
        "revocations",
        sa.Column("revocation_id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("grant_id", sa.String(64), nullable=False),
        _time("revoked_at"),
        _time("expires_at"),
    )
    op.create_table(
        "consents",
        sa.Column("user_id", sa.String(64), sa.ForeignKey("users.user_id", ondelete="CASCADE"), primary_key=True),
        sa.Column("client_id", sa.String(255), primary_key=True),
        sa.Column("resource", sa.String(512), primary_key=True),
        sa.Column("scope", sa.Text, nullable=False),
        _time("granted_at"),
    )


def downgrade() -> None:
    for table in ("consents", "revocations", "refresh_tokens", "authorization_codes", "grants",
                  "authorization_requests", "login_sessions", "clients", "users"):
        op.drop_table(table)
