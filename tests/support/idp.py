"""A fake outside issuer — an enterprise IdP or a workload identity provider — for tests.

An :class:`Issuer` has an identifier, freshly generated EC P-256 and RSA signing keys
(kids ``<name>-ec-<n>`` / ``<name>-rsa-<n>``) and publishes their public halves as a
JWK Set: :meth:`Issuer.write_jwks` writes it to a file (for ``jwks_file``) and a
:class:`JwksServer` serves it over plain HTTP on a free loopback port (for
``jwks_uri``). :meth:`Issuer.rotate` replaces the keys; a server publishing the
issuer then serves the new set, as an issuer rotating its keys would.

The builders make whatever a careless or hostile issuer could sign:

- :func:`sign` serialises any header and claims exactly as given (no defaults added),
  with ``alg: none`` (empty signature), an HMAC secret, or any key;
- :meth:`Issuer.id_jag` and :meth:`Issuer.workload` start from a valid ID-JAG
  (``typ oauth-id-jag+jwt``) or workload JWT and take any claim or header as a keyword
  (``OMIT`` leaves it out), with ``extra`` claims and ``header`` overrides on top.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final

from joserfc.jwk import ECKey, OctKey, RSAKey
from joserfc.jws import JWSRegistry

ID_JAG_TYPE: Final = "oauth-id-jag+jwt"
JWT_BEARER: Final = "urn:ietf:params:oauth:grant-type:jwt-bearer"


class _Omit:
    def __repr__(self) -> str:
        return "OMIT"


OMIT: Final = _Omit()
"""Leave this claim or header parameter out of the JWT."""

_DEFAULT: Final = object()

_HMAC_DIGESTS: Final = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}

SigningKey = ECKey | RSAKey | OctKey


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def sign(header: Mapping[str, Any], claims: Mapping[str, Any] | bytes, key: SigningKey | bytes | None = None, *,
         algorithm: str | None = None) -> str:
    """A compact JWS of exactly `header` and `claims` (a mapping, or raw payload bytes).

    The signature is made with `algorithm` (default: the header's ``alg``) and `key`:
    ``none`` gives an empty signature (RFC 7519 §6.1); an HMAC algorithm takes an
    :class:`OctKey` or raw secret bytes (any bytes, a PEM public key included).
    Nothing is checked, so any forgery can be built.
    """
    alg = algorithm if algorithm is not None else str(header.get("alg", "none"))
    payload = claims if isinstance(claims, bytes) else _json(dict(claims))
    signing_input = f"{_b64(_json(dict(header)))}.{_b64(payload)}".encode("ascii")
    if alg == "none":
        signature = b""
    else:
        if key is None:
            raise ValueError(f"{alg} needs a key")
        if isinstance(key, bytes):
            # Raw bytes by hand: joserfc rightly refuses a PEM public key as an HMAC secret,
            # which is exactly the forgery (RFC 8725 §2.1) a test must be able to build.
            signature = hmac.new(key, signing_input, _HMAC_DIGESTS[alg]).digest()
        else:
            signature = JWSRegistry.algorithms[alg].sign(signing_input, key)
    return f"{signing_input.decode('ascii')}.{_b64(signature)}"


class Issuer:
    """One outside issuer: its ``iss`` and its current signing keys."""

    def __init__(self, issuer: str, name: str) -> None:
        self.issuer = issuer
        self.name = name
        self.generation = 0
        self.ec_key, self.rsa_key = self._new_keys()

    def _new_keys(self) -> tuple[ECKey, RSAKey]:
        self.generation += 1
        ec = ECKey.generate_key("P-256", parameters={"kid": f"{self.name}-ec-{self.generation}"}, private=True)
        rsa = RSAKey.generate_key(2048, parameters={"kid": f"{self.name}-rsa-{self.generation}"}, private=True)
        return ec, rsa

    def rotate(self) -> tuple[ECKey, RSAKey]:
        """New keys with new kids replace the old; returns the old (EC, RSA) pair."""
        old = self.ec_key, self.rsa_key
        self.ec_key, self.rsa_key = self._new_keys()
        return old

    def jwks(self) -> dict[str, Any]:
        """The public JWK Set this issuer publishes now."""
        return {"keys": [self.ec_key.as_dict(private=False), self.rsa_key.as_dict(private=False)]}

    def write_jwks(self, path: Path) -> Path:
        path.write_text(json.dumps(self.jwks()))
        return path

    def key_for(self, alg: str) -> SigningKey:
        return self.rsa_key if alg.startswith(("RS", "PS")) else self.ec_key

    def jwt(
        self,
        claims: Mapping[str, Any],
        *,
        alg: str = "ES256",
        typ: Any = "JWT",
        kid: Any = _DEFAULT,
        key: SigningKey | bytes | None = None,
        header: Mapping[str, Any] | None = None,
    ) -> str:
        """`claims` signed by this issuer (or by `key`); header ``alg``, ``typ``, ``kid`` plus `header`."""
        signing_key = key if key is not None else (None if alg == "none" else self.key_for(alg))
        if kid is _DEFAULT:
            kid = signing_key.kid if isinstance(signing_key, ECKey | RSAKey) else OMIT
        protected: dict[str, Any] = {"alg": alg, "typ": typ, "kid": kid, **(header or {})}
        return sign(_present(protected), claims, signing_key)

    def claims(
        self,
        *,
        sub: Any,
        aud: Any,
        iss: Any = _DEFAULT,
        lifetime: int = 120,
        iat: Any = _DEFAULT,
        exp: Any = _DEFAULT,
        jti: Any = _DEFAULT,
        extra: Mapping[str, Any] | None = None,
        **named: Any,
    ) -> dict[str, Any]:
        """Registered claims with fresh defaults (``jti`` random, ``exp`` now + `lifetime`), then the rest."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer if iss is _DEFAULT else iss,
            "sub": sub,
            "aud": aud,
            "iat": now if iat is _DEFAULT else iat,
            "exp": now + lifetime if exp is _DEFAULT else exp,
            "jti": uuid.uuid4().hex if jti is _DEFAULT else jti,
            **named,
            **(extra or {}),
        }
        return _present(claims)

    def id_jag(
        self,
        *,
        aud: Any,
        client_id: Any,
        resource: Any,
        sub: Any = "alice@enterprise.example",
        scope: Any = "demo:tools",
        alg: str = "ES256",
        typ: Any = ID_JAG_TYPE,
        kid: Any = _DEFAULT,
        key: SigningKey | bytes | None = None,
        header: Mapping[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        """An ID-JAG (draft-ietf-oauth-identity-assertion-authz-grant §3): one user, one client, one resource.

        `aud` is the authorization server's issuer; other keywords (``iss``, ``jti``,
        ``exp``, ``iat``, ``lifetime``, ``auth_time``, ``extra``...) go to :meth:`claims`.
        """
        body = self.claims(sub=sub, aud=aud, client_id=client_id, resource=resource, scope=scope, **claims)
        return self.jwt(body, alg=alg, typ=typ, kid=kid, key=key, header=header)

    def workload(
        self,
        *,
        aud: Any,
        sub: Any = "spiffe://workloads.example/ns/prod/sa/reporter",
        alg: str = "ES256",
        typ: Any = "JWT",
        kid: Any = _DEFAULT,
        key: SigningKey | bytes | None = None,
        header: Mapping[str, Any] | None = None,
        **claims: Any,
    ) -> str:
        """A workload's JWT (a JWT-SVID, a CI job's OIDC token...): ``iss``, ``sub``, ``aud``, ``exp``."""
        return self.jwt(self.claims(sub=sub, aud=aud, **claims), alg=alg, typ=typ, kid=kid, key=key, header=header)


def _present(values: Mapping[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in values.items() if value is not OMIT}


def unknown_key(kid: str = "unknown-1") -> ECKey:
    """A P-256 key no issuer publishes."""
    return ECKey.generate_key("P-256", parameters={"kid": kid}, private=True)


@dataclass
class _Document:
    status: int
    body: bytes


@dataclass
class JwksServer:
    """Plain HTTP on 127.0.0.1 serving JWK Sets by path; counts what was fetched.

    A path either publishes an :class:`Issuer` (its current keys, so :meth:`Issuer.rotate`
    changes what is served) or a fixed answer set with :meth:`answer`.
    """

    port: int = 0
    issuers: dict[str, Issuer] = field(default_factory=dict)
    answers: dict[str, _Document] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def publish(self, path: str, issuer: Issuer) -> str:
        with self.lock:
            self.answers.pop(path, None)
            self.issuers[path] = issuer
        return self.url(path)

    def answer(self, path: str, body: bytes | Mapping[str, Any], status: int = 200) -> str:
        with self.lock:
            self.issuers.pop(path, None)
            self.answers[path] = _Document(status, body if isinstance(body, bytes) else _json(dict(body)))
        return self.url(path)

    def fetched(self, path: str) -> int:
        with self.lock:
            return self.hits.get(path, 0)

    def _respond(self, path: str) -> _Document:
        with self.lock:
            self.hits[path] = self.hits.get(path, 0) + 1
            if path in self.issuers:
                return _Document(200, _json(self.issuers[path].jwks()))
            return self.answers.get(path, _Document(404, b'{"error":"not found"}'))


@contextmanager
def jwks_server() -> Iterator[JwksServer]:
    """A :class:`JwksServer` running in a thread of its own until the block ends."""
    server = JwksServer()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            document = server._respond(self.path.split("?", 1)[0])
            self.send_response(document.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(document.body)))
            self.end_headers()
            self.wfile.write(document.body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    server.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, name="jwks-server", daemon=True)
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)
