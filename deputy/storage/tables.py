"""Table definitions: the one place the schema is described in Python.

Times are integer Unix seconds (portable across SQLite and PostgreSQL); secrets
(codes, refresh tokens, session ids, client secrets) are stored only as hashes.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Table,
    Text,
    false,
    text,
)

metadata = MetaData()

users = Table(
    "users",
    metadata,
    Column("user_id", String(64), primary_key=True),
    Column("username", String(128), nullable=False, unique=True),
    # An argon2id hash; a federated user's is NO_PASSWORD (deputy.storage.users), which never verifies.
    Column("password_hash", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    # Migration 0012 (OIDC federation): "local", or the name of the identity provider she signs in through.
    Column("source", String(64), nullable=False, server_default="local"),
    # A federated user is (issuer, sub) (OpenID Connect Core §2: sub is unique within its issuer), never her e-mail.
    Column("issuer", String(1024)),
    Column("subject", String(255)),
    # Her profile as the identity provider last stated it (refreshed at each sign-in): outside text.
    Column("email", String(320)),
    Column("display_name", String(256)),
    Column("groups", JSON, nullable=False, server_default=text("'[]'")),
    Column("claims", JSON, nullable=False, server_default=text("'{}'")),
    Column("profile_updated_at", BigInteger),
    Column("disabled_at", BigInteger),  # set by `deputy users disable`: no sign-in, no new grant
)
# A unique index, not a constraint: SQLite adds it without rebuilding the table (which its foreign keys would empty).
Index("uq_users_issuer_subject", users.c.issuer, users.c.subject, unique=True)

clients = Table(
    "clients",
    metadata,
    Column("client_id", String(255), primary_key=True),
    Column("client_secret_hash", Text),
    Column("client_name", String(255), nullable=False),
    Column("redirect_uris", JSON, nullable=False),
    Column("grant_types", JSON, nullable=False),
    Column("token_endpoint_auth_method", String(64), nullable=False),
    Column("application_type", String(16), nullable=False),
    Column("source", String(16), nullable=False),  # config | cli | registration | document
    Column("created_at", BigInteger, nullable=False),
    Column("status", String(16), nullable=False, server_default="active"),  # active | pending | denied
    Column("jwks", JSON),
    Column("jwks_uri", Text),
    Column("registration_access_token_hash", String(64)),
    Column("client_metadata", JSON),
)

login_sessions = Table(
    "login_sessions",
    metadata,
    Column("session_hash", String(64), primary_key=True),
    Column("user_id", String(64), ForeignKey("users.user_id", ondelete="CASCADE"), nullable=False),
    Column("auth_time", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
)

authorization_requests = Table(
    "authorization_requests",
    metadata,
    Column("request_id", String(64), primary_key=True),
    Column("client_id", String(255), nullable=False),
    Column("params", JSON, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
)
# Migration 0015: each new pending request first deletes the expired ones (deputy.storage.sessions.save_request).
Index("ix_authorization_requests_expires_at", authorization_requests.c.expires_at)

# Migration 0013: a sign-in sent to an identity provider, waiting for its callback (deputy.storage.federated_signins).
federated_signins = Table(
    "federated_signins",
    metadata,
    Column("state_hash", String(64), primary_key=True),
    Column("browser_hash", String(64), nullable=False),
    Column("idp", String(64), nullable=False),
    Column("pending", JSON, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
)

grants = Table(
    "grants",
    metadata,
    Column("grant_id", String(64), primary_key=True),
    Column("client_id", String(255), nullable=False),
    # A user id, or for the client credentials grant the client's own id (the token's ``sub``).
    Column("user_id", String(255), nullable=False),
    Column("resource", Text, nullable=False),
    Column("scope", Text, nullable=False),
    Column("auth_time", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger),
    Column("revoked_reason", String(64)),
    # The grant of the token this one was exchanged from (RFC 8693); revoking a parent revokes it.
    Column("parent_grant_id", String(64)),
    # The grant of the actor token of that exchange (migration 0011); revoking the actor revokes it too.
    Column("actor_grant_id", String(64)),
)
Index("ix_grants_user_client", grants.c.user_id, grants.c.client_id)
Index("ix_grants_parent", grants.c.parent_grant_id)
Index("ix_grants_actor", grants.c.actor_grant_id)

authorization_codes = Table(
    "authorization_codes",
    metadata,
    Column("code_hash", String(64), primary_key=True),
    Column("grant_id", String(64), ForeignKey("grants.grant_id", ondelete="CASCADE"), nullable=False),
    Column("client_id", String(255), nullable=False),
    Column("redirect_uri", Text, nullable=False),
    Column("code_challenge", String(128), nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("consumed_at", BigInteger),
)

refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("grant_id", String(64), ForeignKey("grants.grant_id", ondelete="CASCADE"), nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("used_at", BigInteger),
)
Index("ix_refresh_tokens_grant", refresh_tokens.c.grant_id)

revocations = Table(
    "revocations",
    metadata,
    Column("revocation_id", Integer, primary_key=True, autoincrement=True),
    Column("grant_id", String(64), nullable=False),
    Column("revoked_at", BigInteger, nullable=False),
    # After this moment no access token of the grant can still be valid.
    Column("expires_at", BigInteger, nullable=False),
    # PostgreSQL only (set by the server): the writing transaction, read by commit horizon (migration 0010).
    Column("writer_xid", BigInteger),
)
Index("ix_revocations_writer_xid", revocations.c.writer_xid)

consents = Table(
    "consents",
    metadata,
    Column("user_id", String(64), ForeignKey("users.user_id", ondelete="CASCADE"), primary_key=True),
    Column("client_id", String(255), primary_key=True),
    Column("resource", String(512), primary_key=True),
    Column("scope", Text, nullable=False),
    Column("granted_at", BigInteger, nullable=False),
)

# private_key_jwt assertions seen (RFC 7523 §3 item 7): a jti is accepted once until the assertion expires.
assertion_jtis = Table(
    "assertion_jtis",
    metadata,
    Column("client_id", String(255), primary_key=True),
    Column("jti", String(255), primary_key=True),
    Column("expires_at", BigInteger, nullable=False),
)

# Human approvals of one exact call (deputy.storage.approvals): bound to the SHA-256 of the call's canonical JSON,
# the user, the agent and the whole actor chain (chain_hash, migration 0009; NULL never matches); used at most once.
approvals = Table(
    "approvals",
    metadata,
    Column("approval_id", String(64), primary_key=True),
    Column("server", String(255), nullable=False),
    Column("tool", String(255), nullable=False),
    Column("call_hash", String(64), nullable=False),
    Column("arguments", JSON, nullable=False),
    Column("user_id", String(255), nullable=False),
    Column("agent", String(255), nullable=False),
    Column("actors", JSON),
    Column("chain_hash", String(64)),
    Column("decision_id", String(64)),
    Column("self_approval", Boolean, nullable=False, server_default=false()),  # @approval("self")
    Column("status", String(16), nullable=False),  # pending | approved | denied | used (expiry: expires_at)
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("decided_by", String(255)),
    Column("decided_at", BigInteger),
    Column("used_at", BigInteger),
)
Index("ix_approvals_call", approvals.c.call_hash, approvals.c.user_id, approvals.c.agent)

# The audit log (deputy.audit.log): an RFC 9162 Merkle tree over canonical JSON records.
# audit_leaves holds the exact bytes that were hashed; audit_nodes the hashes of completed perfect subtrees of
# 2**level leaves (level >= 1) starting at leaf idx * 2**level; audit_head the sequencer's compact range (the
# right edge of the whole tree), updated in the same transaction as the leaves; audit_checkpoints the signed
# C2SP checkpoints, one per tree size.
audit_leaves = Table(
    "audit_leaves",
    metadata,
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("record", LargeBinary, nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

audit_nodes = Table(
    "audit_nodes",
    metadata,
    Column("level", SmallInteger, primary_key=True, autoincrement=False),
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", LargeBinary(32), nullable=False),
)

audit_checkpoints = Table(
    "audit_checkpoints",
    metadata,
    Column("size", BigInteger, primary_key=True, autoincrement=False),
    Column("root", LargeBinary(32), nullable=False),
    Column("note", Text, nullable=False),
    Column("created_at", BigInteger, nullable=False),
)

audit_head = Table(
    "audit_head",
    metadata,
    Column("id", SmallInteger, primary_key=True, autoincrement=False),  # always 1: one log per database
    Column("size", BigInteger, nullable=False),
    Column("compact", LargeBinary, nullable=False),
)

# Witness cosignatures (deputy.audit.witness_push): one C2SP tlog-cosignature line per (checkpoint size, witness),
# as returned by the witness's add-checkpoint and verified with its key before it is stored.
audit_cosignatures = Table(
    "audit_cosignatures",
    metadata,
    Column("size", BigInteger, primary_key=True, autoincrement=False),
    Column("witness_name", String(1024), primary_key=True),
    Column("line", Text, nullable=False),
)

# Migration 0014 (issue 15): each user's connection to a credentials = "oauth" upstream (deputy.storage.connections).
# Tokens are sealed (deputy.connections.vault: AES-256-GCM, bound to the row and field); token_digest is the SHA-256
# of the access token, for audit records; version changes at each write a refresh must not overwrite unseen.
upstream_connections = Table(
    "upstream_connections",
    metadata,
    Column("user_id", String(64), ForeignKey("users.user_id", ondelete="CASCADE"), primary_key=True),
    Column("server", String(64), primary_key=True),
    Column("status", String(16), nullable=False),  # active | broken
    Column("issuer", Text, nullable=False),
    Column("client_id", Text, nullable=False),
    Column("scope", Text),
    Column("wanted_scope", Text),  # step-up: the scope a 403 insufficient_scope asked for
    Column("access_token", LargeBinary, nullable=False),
    Column("refresh_token", LargeBinary),
    Column("expires_at", BigInteger),
    Column("created_at", BigInteger, nullable=False),
    Column("refreshed_at", BigInteger),
    Column("token_digest", String(64), nullable=False),
    Column("version", Integer, nullable=False),
)
Index("ix_upstream_connections_server", upstream_connections.c.server)

# Deputy's identity at an upstream's authorization server, when Deputy registered it (RFC 7591) or uses its metadata
# document; the secret sealed like the tokens.
upstream_clients = Table(
    "upstream_clients",
    metadata,
    Column("server", String(64), primary_key=True),
    Column("issuer", String(1024), primary_key=True),
    Column("client_id", Text, nullable=False),
    Column("client_secret", LargeBinary),
    Column("auth_method", String(64), nullable=False),
    # registered@ + SHA-256 (cut) of the redirect URI it was registered with (deputy.connections.parts); "registered"
    # in rows of versions that registered every client with the shared redirect URI (they are registered again).
    Column("source", String(32), nullable=False),
    Column("registered_at", BigInteger, nullable=False),
)

# A connection started in a browser, waiting for the upstream authorization server's callback: keyed by the SHA-256
# of state, bound to the browser (SHA-256 of its cookie) and the user; used once.
connection_flows = Table(
    "connection_flows",
    metadata,
    Column("state_hash", String(64), primary_key=True),
    Column("browser_hash", String(64), nullable=False),
    Column("user_id", String(64), nullable=False),
    Column("server", String(64), nullable=False),
    Column("pending", JSON, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
)
