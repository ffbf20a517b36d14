"""The commented starter configuration (`deputy init`), the demo's embedded defaults, and the configuration a
running demo records in its data directory (``demo.toml``) for the admin commands to find."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

DEMO_UPSTREAM_PORT = 0  # any free port: a second demo, or anything else on a fixed port, cannot collide
DEMO_POLICY_DIR = Path(__file__).resolve().parent / "demo" / "policies"
DEFAULT_DATA_DIR = ".deputy"  # as deputy.config reads data_dir
DEMO_CONFIG_NAME = "demo.toml"

STARTER_CONFIG = '''\
# Deputy configuration. Every key can also be set by environment variable where noted.

# The issuer and the base of every protected server's URL. An origin only, no trailing
# slash. Plain http is accepted only on a loopback address.          (DEPUTY_PUBLIC_URL)
public_url = "http://127.0.0.1:8000"
host = "127.0.0.1"                                                  # (DEPUTY_HOST)
port = 8000                                                         # (DEPUTY_PORT)
data_dir = ".deputy"      # SQLite database and keys, files 0600      (DEPUTY_DATA_DIR)
# database_url = "postgresql+asyncpg://deputy@127.0.0.1:5432/deputy" # (DEPUTY_DATABASE_URL)
# local_users = true      # Deputy's own password users; default: true without [[identity_providers]], else false
# workers = 1            # processes serving this port and database, 1-64: one per core  (DEPUTY_WORKERS)
# trusted_proxies = ["10.0.0.0/8"]  # reverse proxies whose X-Forwarded-For names the client (per-address limits)

[tokens]
access_token_ttl = 600        # seconds; access tokens are short-lived JWTs (RFC 9068)
refresh_token_ttl = 1209600   # seconds; rotated on every use, reuse revokes the family
code_ttl = 60                 # seconds, at most 60
clock_leeway = 30             # seconds of clock skew tolerated on exp/nbf/iat

[registration]                # RFC 7591 dynamic registration (deprecated by MCP 2026-07-28)
mode = "loopback"             # "off"; "loopback": native clients with http loopback redirects;
                              # "allowlist": listed redirect hosts, trusted software statements
                              # or initial access tokens; "approval": pending until
                              # `deputy clients approve ID`
# allowed_redirect_hosts = ["app.example.com"]
# initial_access_tokens = [{ env = "DEPUTY_INITIAL_ACCESS_TOKEN" }]
# trusted_publishers = [{ issuer = "https://publisher.example", jwks_file = "publisher.jwks.json" }]
rate_limit_per_minute = 10

[client_documents]            # client ids that are https URLs (MCP 2026 preferred way)
enabled = true
allowed_domains = []          # e.g. ["*.example.com"]: served at once
denied_domains = []
unknown_domains = "refuse"    # or "approval": held pending until an admin approves

[gateway]
revocation_max_staleness = 5.0  # refuse calls when revocations could not be read for this long
allowed_origins = []            # browser origins allowed besides Deputy's own (DNS rebinding guard)
policy_watch_seconds = 2.0      # reload policies when their files change; 0: only on SIGHUP

[audit]                       # the signed, tamper-evident log of every security event
# origin = "deputy.example.com/deputy-audit"   # default: <host of public_url>/deputy-audit
# key_file = "audit.key"      # Ed25519 checkpoint key, under data_dir; created on first start
arguments = "store"           # "store" call arguments in decision records, or only their "digest"
checkpoint_every = 1000       # sign a checkpoint every N records ...
checkpoint_interval_ms = 1000 # ... or every T ms, whichever comes first (and at shutdown)
# witnesses = [{ url = "https://witness.example/", vkey = "witness.example+1234abcd+BASE64" }]

[approvals]                   # calls held by a permit annotated @approval("required")
ttl = 900                     # seconds an approval lives: to be decided, then used once
approvers = []                # local usernames who may approve (never a federated LABEL@IDP: first come)
# approver_groups = { corp = ["security-oncall"] }   # users of provider corp in one of its groups
# approver_subjects = { corp = ["00u1a2b3c4"] }      # users of provider corp by their sub (issuer, sub)
                              # all three empty: any user but the requester

[limits]                      # what one connection may cost (lowered at start to fit the file-descriptor limit)
max_connections = 4096        # open at once; past it the oldest that has sent no request is closed,
                              # taken from the client address holding the most such connections
header_timeout = 10           # seconds a connection has to send its request line and headers
idle_timeout = 5              # seconds a keep-alive connection may wait between requests

[metrics]                     # Prometheus metrics at http://HOST:PORT/metrics, apart from the public port
# listen = "127.0.0.1:9464"   # HOST:PORT (port 0: any free one); absent: not served

# Each upstream MCP server is protected at {public_url}/mcp/NAME.
[servers.demo]
title = "Demo server"
url = "http://127.0.0.1:8001/mcp"       # or: command = ["python", "-m", "my_server"]
# spare_processes = 1                   # stdio: processes started ahead so a new session need not wait; 0: off
# big_integers = "refuse"              # integers beyond +-(2^53 - 1) refused: a JavaScript upstream reads them
                                        # as other numbers; "pass" for an exact reader (Python)
scopes = ["demo:tools", "demo:admin"]   # every scope tokens for this server may carry
required_scopes = ["demo:tools"]        # needed for any call; advertised in challenges
# policies = "policies/demo"           # a directory of Cedar policies deciding every call to this server
                                        # (check them: deputy policy validate --server demo)
# credentials = "exchange"              # mint a short-lived token for the upstream (aud below, act =
# upstream_audience = "https://demo.internal/mcp"   # the gateway + the caller's chain); or "static":
# [servers.demo.headers]                # static headers sent upstream (never the client's token)
# X-Api-Key = { env = "DEMO_API_KEY" }  # or { file = "/run/secrets/demo-api-key" }

[delegation]                  # RFC 8693 token exchange: agents acting for users
max_depth = 4                 # most actors in one act chain
token_ttl = 300               # seconds an exchanged token may live, at most
# [[delegation.may_act]]      # tokens issued to `client` may be exchanged by `actors`
# client = "my-agent"         # or "*"
# actors = ["helper-agent"]

# Outside issuers whose JWTs Deputy believes: enterprise IdPs (ID-JAG), workload identity.
# [[trusted_issuers]]
# issuer = "https://idp.example.com"
# jwks_uri = "https://idp.example.com/.well-known/jwks.json"   # or jwks_file = "idp.jwks.json"
# accept = ["id_jag"]         # and/or "subject_token", "workload"

# Pre-registered clients.
# [[clients]]
# client_id = "my-agent"
# client_name = "My agent"
# redirect_uris = ["http://localhost:3000/callback"]  # never on public_url's host: it would get Deputy's cookies
# token_endpoint_auth_method = "none"   # or client_secret_basic / client_secret_post + client_secret
# grant_types = ["authorization_code", "refresh_token"]  # + "client_credentials",
#               "urn:ietf:params:oauth:grant-type:token-exchange" (confidential clients only)

# Sign in with the organisation's OpenID Provider (one button each on the login page).
# Register the redirect URI {public_url}/login/callback/NAME at the provider.
# [[identity_providers]]
# name = "corp"                       # in URLs: a-z, 0-9, -
# title = "Sign in with Corp"
# issuer = "https://login.corp.example"   # exactly as its discovery document says
# client_id = "deputy"
# client_secret = { env = "CORP_OIDC_SECRET" }   # or private_key_file = "corp-key.pem" (private_key_jwt)
# scopes = ["openid", "email", "profile"]
# groups_claim = "groups"
# allowed_email_domains = ["corp.example"]
# required_groups = ["staff"]         # a member of any one of them may sign in
'''


def demo_defaults(upstream_port: int = DEMO_UPSTREAM_PORT) -> dict[str, Any]:
    return {
        "servers": {
            "demo": {
                "title": "Deputy demo server",
                "url": f"http://127.0.0.1:{upstream_port}/mcp",
                "scopes": ["demo:tools", "demo:admin"],
                "required_scopes": ["demo:tools"],
                "policies": str(DEMO_POLICY_DIR),
            }
        }
    }


def demo_config_path(data_dir: Path) -> Path:
    return data_dir / DEMO_CONFIG_NAME


def _toml_string(value: str) -> str:
    # A TOML basic string: JSON's escapes are TOML's (\uXXXX, \", \\); non-ASCII stays as it is, since TOML has
    # no surrogate-pair escape; DEL, which JSON leaves raw and TOML refuses there, is escaped.
    return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")


def demo_config(public_url: str, host: str, port: int, data_dir: Path, database_url: str, upstream_port: int) -> str:
    """The demo's effective configuration as a ``deputy.toml``: what the admin commands need to open its state."""
    server = demo_defaults(upstream_port)["servers"]["demo"]
    lines = [
        "# Written by `deputy demo` at each start: the demo's effective configuration. Commands run without",
        "# --config or DEPUTY_CONFIG (deputy approvals, deputy audit verify, deputy users, ...) read it from here.",
        f"public_url = {_toml_string(public_url)}",
        f"host = {_toml_string(host)}",
        f"port = {port}",
        f"data_dir = {_toml_string(str(data_dir.resolve()))}",
        f"database_url = {_toml_string(database_url)}",
        "",
        "[servers.demo]",
        *(f"{key} = {json.dumps(value, ensure_ascii=False) if isinstance(value, list) else _toml_string(value)}"
          for key, value in server.items()),
    ]
    return "\n".join(lines) + "\n"


def write_demo_config(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` at once (0600: the database URL may hold a password)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(temporary, path)
