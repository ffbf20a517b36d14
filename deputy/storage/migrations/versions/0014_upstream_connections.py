"""Each user's connections to ``credentials = "oauth"`` upstreams (issue 15; deputy.storage.connections).

``upstream_connections``: one row per (user, server): the upstream's issuer and Deputy's client id there, the scope
granted and the scope a ``403 insufficient_scope`` asked for (step-up), the access and refresh tokens sealed with
AES-256-GCM (deputy.connections.vault), when they expire, the SHA-256 of the access token (for audit records) and a
version changed at each write. ``upstream_clients``: Deputy's identity at each (server, issuer) it registered with
(RFC 7591) or named by its client ID metadata document, a secret sealed like the tokens. ``connection_flows``: a
connection started in a browser, keyed by the SHA-256 of its ``state`` (RFC 6749 §10.12), bound to the browser and
the user; deleted when used or expired.

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"


def upgrade() -> None:
    op.create_table(
        "upstream_connections",
        sa.Column("user_id", sa.String(64), sa.ForeignKey("users.user_id", ondelete="CASCADE"), primary_key=True),
        sa.Column("server", sa.String(64), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("issuer", sa.Text, nullable=False),
        sa.Column("client_id", sa.Text, nullable=False),
        sa.Column("scope", sa.Text),
        sa.Column("wanted_scope", sa.Text),
        sa.Column("access_token", sa.LargeBinary, nullable=False),
        sa.Column("refresh_token", sa.LargeBinary),
        sa.Column("expires_at", sa.BigInteger),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("refreshed_at", sa.BigInteger),
        sa.Column("token_digest", sa.String(64), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
    )
    op.create_index("ix_upstream_connections_server", "upstream_connections", ["server"])
    op.create_table(
        "upstream_clients",
        sa.Column("server", sa.String(64), primary_key=True),
        sa.Column("issuer", sa.String(1024), primary_key=True),
        sa.Column("client_id", sa.Text, nullable=False),
        sa.Column("client_secret", sa.LargeBinary),
        sa.Column("auth_method", sa.String(64), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("registered_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "connection_flows",
        sa.Column("state_hash", sa.String(64), primary_key=True),
        sa.Column("browser_hash", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("server", sa.String(64), nullable=False),
        sa.Column("pending", sa.JSON, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("connection_flows")
    op.drop_table("upstream_clients")
    op.drop_index("ix_upstream_connections_server", table_name="upstream_connections")
    op.drop_table("upstream_connections")
