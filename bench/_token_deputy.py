"""The Deputy that ``bench/token_exchange.py`` measures: its configuration, its clients and secrets, its process.

Two agents: ``agent-a``, whose client credentials tokens are the subject tokens, and ``agent-b`` (one client per
authentication method), which ``[[delegation.may_act]]`` lets act for them. Deputy runs as ``python -m deputy
serve`` on SQLite or on a fresh PostgreSQL database, optionally under cProfile, with statements counted, with
``--workers N``, or with its remembered-secret cache off.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from joserfc.jwk import ECKey

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.support
from tools_call import HOST, free_port, stop, wait_http

from tests.support.databases import database_url

BENCH_DIR = Path(__file__).resolve().parent
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
SUBJECT = "agent-a"  # its client credentials tokens are the subject tokens
ACTORS = {"basic": "agent-b", "jwt": "agent-b-jwt"}  # the exchanging client, per authentication method
AUTH_NAMES = {"basic": "client_secret_basic", "jwt": "private_key_jwt"}
SECRETS = {"agent-a": "agent-a-bench-s3cret-0123456789abcdef", "agent-b": "agent-b-bench-s3cret-0123456789abcdef"}
ACTOR_KEY = ECKey.generate_key("P-256", parameters={"kid": "bench-1", "alg": "ES256"}, private=True)
GRANTS = ("exchange", "client_credentials")
TARGET = 1000.0  # exchanges/s, the aim


# --- Deputy -----------------------------------------------------------------------------------------

def deputy_config(port: int) -> str:
    jwk = ACTOR_KEY.as_dict(private=False)
    toml_key = "{" + ", ".join(f'{k} = "{v}"' for k, v in jwk.items()) + "}"
    grants = f'["client_credentials", "{TOKEN_EXCHANGE}"]'
    return f'''
public_url = "http://{HOST}:{port}"
port = {port}

[tokens]
access_token_ttl = 3600

[registration]
mode = "off"

[servers.demo]
title = "Demo"
url = "http://{HOST}:9/mcp"   # never called: the bench talks to /token only
scopes = ["demo:tools"]

[[clients]]
client_id = "agent-a"
client_name = "Agent A (subject tokens)"
token_endpoint_auth_method = "client_secret_basic"
client_secret = "{SECRETS['agent-a']}"
grant_types = {grants}

[[clients]]
client_id = "agent-b"
client_name = "Agent B (client_secret_basic)"
token_endpoint_auth_method = "client_secret_basic"
client_secret = "{SECRETS['agent-b']}"
grant_types = {grants}

[[clients]]
client_id = "agent-b-jwt"
client_name = "Agent B (private_key_jwt)"
token_endpoint_auth_method = "private_key_jwt"
grant_types = {grants}
jwks = {{keys = [{toml_key}]}}

[delegation]
token_ttl = 300

[[delegation.may_act]]
client = "agent-a"
actors = ["agent-b", "agent-b-jwt"]
'''


# Deputy with its remembered-secret cache off: every client_secret_basic request pays argon2.
UNCACHED = "import deputy.hashing as h; h.REMEMBER_SECONDS = 0.0; from deputy.cli import app; app(['serve'])"


@dataclass
class Deputy:
    process: subprocess.Popen[bytes]
    url: str
    log: Path


@contextmanager
def running_deputy(work: Path, db_url: str, profile: Path | None, uncached: bool,
                   counts: Path | None = None, workers: int = 1) -> Iterator[Deputy]:
    port = free_port()
    config = work / "deputy.toml"
    config.write_text(deputy_config(port))
    env = {**os.environ, "DEPUTY_CONFIG": str(config), "DEPUTY_DATA_DIR": str(work / "data"),
           "DEPUTY_DATABASE_URL": db_url}
    if uncached:
        command = [sys.executable, "-c", UNCACHED]
    elif counts is not None:
        command = [sys.executable, str(BENCH_DIR / "_count_deputy_statements.py"), str(counts), "serve"]
    elif profile is not None:
        command = [sys.executable, str(BENCH_DIR / "_cprofile_deputy.py"), str(profile), "serve"]
    else:
        command = [sys.executable, "-m", "deputy", "serve", *(["--workers", str(workers)] if workers > 1 else [])]
    log = work / "deputy.log"
    process = subprocess.Popen(command, env=env, cwd=work, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    try:
        url = f"http://{HOST}:{port}"
        wait_http(f"{url}/healthz", process, "deputy serve", log)
        yield Deputy(process, url, log)
    finally:
        stop(process)


@contextmanager
def database(backend: str, work: Path) -> Iterator[str]:
    if backend == "sqlite":
        (work / "data").mkdir(parents=True, exist_ok=True)
        yield f"sqlite+aiosqlite:///{work / 'data' / 'deputy.db'}"
        return
    with database_url(backend, work) as url:  # a fresh database, dropped afterwards
        yield url
