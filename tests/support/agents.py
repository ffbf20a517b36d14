"""Clients with their own identity: pre-registered `private_key_jwt` and `client_secret_*` agents.

`agents_deputy` starts a Deputy whose configuration adds these clients (the keys are
generated once per test process; only their public halves go into the config), and the
helpers build client assertions (RFC 7523 §2.2) exactly as told, including broken ones.
"""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlencode

import httpx
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey, OKPKey, RSAKey

from tests.support.databases import database_url
from tests.support.deputy_process import REDIRECT_URI, RunningDeputy, running_deputy
from tests.support.oauth_flow import _basic, post_token

ASSERTION_TYPE: Final = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

JWT_AGENT: Final = "agent-jwt"  # private_key_jwt, client_credentials only
OTHER_JWT_AGENT: Final = "agent-jwt-other"  # private_key_jwt, another key
SECRET_AGENT: Final = "agent-secret"  # client_secret_basic, client_credentials only
SECRET_AGENT_SECRET: Final = "agent-s3cret-for-tests-0123456789"
POST_AGENT: Final = "agent-secret-post"  # client_secret_post, client_credentials and authorization_code
POST_AGENT_SECRET: Final = "agent-post-s3cret-for-tests-01234"
NO_GRANT_AGENT: Final = "agent-no-cc"  # private_key_jwt, authorization_code only (not client_credentials)

EC_KEY: Final = ECKey.generate_key("P-256", parameters={"kid": "ec-1"}, private=True)
RSA_KEY: Final = RSAKey.generate_key(2048, parameters={"kid": "rsa-1"}, private=True)
ED_KEY: Final = OKPKey.generate_key("Ed25519", parameters={"kid": "ed-1"}, private=True)
OTHER_KEY: Final = ECKey.generate_key("P-256", parameters={"kid": "other-1"}, private=True)

SigningKey = ECKey | RSAKey | OKPKey | OctKey


def _jwks(*keys: ECKey | RSAKey | OKPKey) -> str:
    return json.dumps({"keys": [k.as_dict(private=False) for k in keys]})


def agents_config(directory: Path) -> str:
    """The `[[clients]]` to add: one JWKS inline (TOML inline table) and one from a file."""
    (directory / "other-agent.jwks.json").write_text(_jwks(OTHER_KEY))
    inline = json.loads(_jwks(EC_KEY, RSA_KEY, ED_KEY))
    toml_keys = ", ".join("{" + ", ".join(f'{k} = "{v}"' for k, v in key.items()) + "}" for key in inline["keys"])
    return f'''
[[clients]]
client_id = "{JWT_AGENT}"
client_name = "Agent with keys"
token_endpoint_auth_method = "private_key_jwt"
grant_types = ["client_credentials"]
jwks = {{keys = [{toml_keys}]}}

[[clients]]
client_id = "{OTHER_JWT_AGENT}"
client_name = "Another agent with keys"
token_endpoint_auth_method = "private_key_jwt"
grant_types = ["client_credentials"]
jwks_file = "other-agent.jwks.json"

[[clients]]
client_id = "{SECRET_AGENT}"
client_name = "Agent with a secret"
token_endpoint_auth_method = "client_secret_basic"
client_secret = "{SECRET_AGENT_SECRET}"
grant_types = ["client_credentials"]

[[clients]]
client_id = "{POST_AGENT}"
client_name = "Agent posting its secret"
token_endpoint_auth_method = "client_secret_post"
client_secret = "{POST_AGENT_SECRET}"
redirect_uris = ["{REDIRECT_URI}"]
grant_types = ["authorization_code", "refresh_token", "client_credentials"]

[[clients]]
client_id = "{NO_GRANT_AGENT}"
client_name = "Agent with keys, user flows only"
token_endpoint_auth_method = "private_key_jwt"
redirect_uris = ["{REDIRECT_URI}"]
jwks_file = "other-agent.jwks.json"
'''


@contextmanager
def agents_deputy(backend: str, upstream_url: str, directory: Path) -> Iterator[RunningDeputy]:
    """A running Deputy on a fresh database of `backend`, with the agents above registered."""
    with (database_url(backend, directory) as url,
          running_deputy(directory, url, upstream_url, agents_config(directory)) as running):
        yield running


def assertion(
    deputy: RunningDeputy,
    client_id: str = JWT_AGENT,
    *,
    key: SigningKey = EC_KEY,
    alg: str = "ES256",
    aud: Any = None,
    iss: str | None = None,
    sub: str | None = None,
    lifetime: int = 60,
    iat: Any = "now",
    jti: Any = "fresh",
    omit: Sequence[str] = (),
    header: dict[str, Any] | None = None,
) -> str:
    """A signed client assertion; every claim can be set, and any left out with `omit`."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": iss if iss is not None else client_id,
        "sub": sub if sub is not None else client_id,
        "aud": aud if aud is not None else deputy.url,
        "exp": now + lifetime,
        "iat": now if iat == "now" else iat,
        "jti": uuid.uuid4().hex if jti == "fresh" else jti,
    }
    for name in omit:
        claims.pop(name, None)
    protected = {"alg": alg, "typ": "JWT", **({"kid": key.kid} if key.kid else {}), **(header or {})}
    return jwt.encode(protected, claims, key, algorithms=[alg])


def unsigned_assertion(deputy: RunningDeputy, client_id: str = JWT_AGENT) -> str:
    """`alg: none` with an empty signature (RFC 7519 §6.1): must never authenticate anyone."""
    def part(value: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": deputy.url, "exp": now + 60, "iat": now,
              "jti": uuid.uuid4().hex}
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims)}."


def assertion_fields(signed: str) -> list[tuple[str, str]]:
    return [("client_assertion_type", ASSERTION_TYPE), ("client_assertion", signed)]


async def client_credentials(
    deputy: RunningDeputy,
    *,
    auth: Sequence[tuple[str, str]] = (),
    basic: tuple[str, str] | None = None,
    resource: str | None = "DEFAULT",
    scope: str | None = None,
) -> httpx.Response:
    """POST grant_type=client_credentials; `auth` are the client authentication form fields."""
    data: list[tuple[str, str]] = [("grant_type", "client_credentials")]
    if resource == "DEFAULT":
        resource = deputy.resource("demo")
    if resource is not None:
        data.append(("resource", resource))
    if scope is not None:
        data.append(("scope", scope))
    data.extend(auth)
    return await post_token(deputy, data, basic=basic)


async def agent_token(deputy: RunningDeputy, resource: str | None = None) -> str:
    """An access token for the JWT agent (private_key_jwt + client_credentials), asserting success."""
    response = await client_credentials(deputy, auth=assertion_fields(assertion(deputy)),
                                        resource=resource or deputy.resource("demo"))
    assert response.status_code == 200, response.text
    token: str = response.json()["access_token"]
    return token


async def post_form(deputy: RunningDeputy, path: str, data: Sequence[tuple[str, str]], *,
                    basic: tuple[str, str] | None = None) -> httpx.Response:
    """POST a form to `path` (``/revoke``, ``/introspect``), with Basic credentials when given."""
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if basic is not None:
        headers["Authorization"] = _basic(*basic)
    async with httpx.AsyncClient(timeout=30) as http:
        return await http.post(f"{deputy.url}{path}", content=urlencode(list(data)), headers=headers)
