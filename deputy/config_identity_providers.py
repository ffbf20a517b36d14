"""``[[identity_providers]]`` and ``local_users``: the organisation's OpenID Providers users sign in with (issue 14).

Each entry is one OpenID Provider Deputy is a relying party of (OpenID Connect Core 1.0 §3.1):

- ``name``: used in URLs (``{public_url}/login/callback/NAME``, its redirect URI), so a strict token
  ``[a-z0-9-]{1,32}``, unique; ``title`` the button's text (default: the name);
- ``issuer``: the provider's Issuer Identifier, compared as an exact string with the one its discovery document
  and its ID tokens carry (OpenID Connect Discovery 1.0 §4.3, Core §3.1.3.7 item 2); https, or http only on a
  loopback address (as ``public_url``), no query or fragment (Discovery §2); two entries never share one, or an
  authorization response could not tell them apart (RFC 9207 §2, RFC 9700 §4.4 mix-up);
- ``client_id`` and how Deputy authenticates at the token endpoint (Core §9): exactly one of ``client_secret``
  (a literal or ``{env = "VAR"}``; ``client_secret_basic`` or ``_post`` as the provider supports) or
  ``private_key_file`` (``private_key_jwt``: a PEM or JWK file of an EC P-256/P-384 or RSA (≥ 2048 bits) private
  key, relative to the configuration file);
- ``scopes`` (default ``openid email profile``; ``openid`` is required, Core §3.1.2.1);
- claim mapping: ``username_claim`` (default: ``preferred_username``, then ``email`` when ``email_verified`` is true,
  then ``sub``: :mod:`deputy.federation.claims`),
  ``groups_claim`` (default ``groups``), ``extra_claims`` (at most :data:`MAX_EXTRA_CLAIMS` more claim names to
  carry, each an identifier, so it can later name a policy attribute);
- who may sign in: ``allowed_email_domains`` (a verified e-mail address in one of them) and ``required_groups``
  (a member of at least one of them); both empty: anyone the provider signs in.

``local_users`` (top level): whether Deputy's own password users may sign in; default true while no identity
provider is configured, false once one is.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from joserfc.errors import JoseError
from joserfc.jwk import ECKey, JWKRegistry, RSAKey

from deputy.config_values import (
    ENV_SECRET,
    ConfigError,
    Table,
    as_table,
    as_tables,
    at,
    check_http_url,
    read_bool,
    read_scopes,
    read_str,
    read_strings,
    secret_value,
)
from deputy.jwks_rules import MIN_RSA_BITS

NAME = re.compile(r"[a-z0-9-]{1,32}")
# A claim name that is also an identifier: a policy attribute can later be named after it.
CLAIM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
MAX_EXTRA_CLAIMS = 8
MAX_LISTED = 64  # allowed_email_domains, required_groups
MAX_ISSUER_LENGTH = 255
DOMAIN = re.compile(r"(?=.{1,253}\Z)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*")
DEFAULT_SCOPES = ("openid", "email", "profile")
DEFAULT_USERNAME_CLAIMS = ("preferred_username", "email", "sub")
# The signing algorithm of a private_key_jwt assertion, by key (RFC 7518 §3.3-3.4).
CURVE_ALGORITHMS = {"P-256": "ES256", "P-384": "ES384"}
RSA_ALGORITHMS = ("RS256", "PS256")
IDENTITY_PROVIDER = Table(frozenset({
    "name", "title", "issuer", "client_id", "client_secret", "private_key_file", "scopes", "username_claim",
    "groups_claim", "extra_claims", "allowed_email_domains", "required_groups", "assume_pkce_s256"}),
    {"client_secret": ENV_SECRET})


@dataclass(frozen=True, slots=True)
class ClientKey:
    """The private key Deputy signs its ``private_key_jwt`` assertions with (RFC 7523 §2.2), and its name."""

    key: ECKey | RSAKey = field(repr=False)
    algorithm: str
    kid: str


@dataclass(frozen=True, slots=True)
class IdentityProvider:
    name: str
    title: str
    issuer: str
    client_id: str
    redirect_uri: str  # {public_url}/login/callback/NAME, registered at the provider
    client_secret: str | None = field(default=None, repr=False)
    client_key: ClientKey | None = None  # private_key_jwt; exactly one of this and client_secret
    scopes: tuple[str, ...] = DEFAULT_SCOPES
    username_claims: tuple[str, ...] = DEFAULT_USERNAME_CLAIMS  # the first one present names the user
    groups_claim: str = "groups"
    extra_claims: tuple[str, ...] = ()
    allowed_email_domains: tuple[str, ...] = ()  # lower case; empty: any
    required_groups: tuple[str, ...] = ()  # any one of them admits; empty: no group needed
    # The provider checks PKCE S256 though its discovery document leaves code_challenge_methods_supported out
    # (Microsoft Entra ID): an operator's statement, honoured only while the document lists no methods at all.
    assume_pkce_s256: bool = False


def identity_providers(raw: Mapping[str, Any], public_url: str, environ: Mapping[str, str],
                       base_dir: Path) -> tuple[IdentityProvider, ...]:
    """Every ``[[identity_providers]]`` entry, each named by its index; names and issuers unique."""
    entries = as_tables(raw.get("identity_providers", []), "identity_providers")
    found = tuple(_provider(at("identity_providers", index), entry, public_url, environ, base_dir)
                  for index, entry in enumerate(entries))
    for index, provider in enumerate(found):
        earlier = found[:index]
        if any(p.name == provider.name for p in earlier):
            raise ConfigError(at(at("identity_providers", index), "name"), f"{provider.name} is used twice")
        if any(p.issuer == provider.issuer for p in earlier):
            raise ConfigError(at(at("identity_providers", index), "issuer"),
                              "each issuer may appear once (RFC 9207: responses are told apart by issuer)")
    return found


def local_users(raw: Mapping[str, Any], providers: tuple[IdentityProvider, ...]) -> bool:
    """``local_users``: default true while no identity provider is configured, false once one is."""
    enabled = read_bool(raw, "local_users", "", not providers)
    if not enabled and not providers:
        raise ConfigError("local_users", "cannot be false without an [[identity_providers]] entry: nobody could "
                                         "sign in")
    return enabled


def _provider(where: str, raw: Any, public_url: str, environ: Mapping[str, str],
              base_dir: Path) -> IdentityProvider:
    table = as_table(raw, where)
    name = table.get("name")
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ConfigError(at(where, "name"), "must be 1 to 32 of a-z, 0-9 and - (it is used in URLs)")
    secret, key = _client_auth(table, where, environ, base_dir)
    scopes = read_scopes(table, "scopes", where, DEFAULT_SCOPES)
    if "openid" not in scopes:
        raise ConfigError(at(where, "scopes"), "must include openid (OpenID Connect Core 1.0 §3.1.2.1)")
    username = table.get("username_claim")
    return IdentityProvider(
        name=name,
        title=_bounded(read_str(table, "title", where, name), at(where, "title"), 100),
        issuer=_issuer(table.get("issuer"), at(where, "issuer")),
        client_id=_bounded(read_str(table, "client_id", where), at(where, "client_id"), 255),
        redirect_uri=f"{public_url}/login/callback/{name}",
        client_secret=secret,
        client_key=key,
        scopes=tuple(dict.fromkeys(scopes)),
        username_claims=DEFAULT_USERNAME_CLAIMS if username is None else (_claim(username, at(where,
                                                                                              "username_claim")),),
        groups_claim=_claim(table.get("groups_claim", "groups"), at(where, "groups_claim")),
        extra_claims=_extra_claims(table, where),
        allowed_email_domains=_domains(table, where),
        required_groups=_groups(table, where),
        assume_pkce_s256=read_bool(table, "assume_pkce_s256", where, False),
    )


def _bounded(value: str, where: str, most: int) -> str:
    if len(value) > most or not value.isprintable():
        raise ConfigError(where, f"must be printable, at most {most} characters")
    return value


def _issuer(value: Any, where: str) -> str:
    """https, or http on a loopback address only; no query or fragment (OpenID Connect Discovery 1.0 §2)."""
    issuer = check_http_url(value, where)
    parts = urlsplit(issuer)
    if parts.query or parts.fragment or len(issuer) > MAX_ISSUER_LENGTH:
        raise ConfigError(where, f"must be the issuer identifier: no query or fragment, at most "
                                 f"{MAX_ISSUER_LENGTH} characters")
    if parts.scheme == "http" and not is_loopback_url(issuer):
        raise ConfigError(where, "plain http is allowed only on a loopback address; use https")
    return issuer


def is_loopback_url(url: str) -> bool:
    """An http(s) URL whose host is ``localhost`` or a loopback address (the rule ``public_url`` follows)."""
    host = urlsplit(url).hostname
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _claim(value: Any, where: str) -> str:
    if not isinstance(value, str) or not CLAIM_NAME.fullmatch(value):
        raise ConfigError(where, "must be a claim name: a letter or _, then letters, digits or _ (at most 64)")
    return value


def _extra_claims(table: Mapping[str, Any], where: str) -> tuple[str, ...]:
    names = read_strings(table, "extra_claims", where, what="claim names")
    if len(names) > MAX_EXTRA_CLAIMS:
        raise ConfigError(at(where, "extra_claims"), f"at most {MAX_EXTRA_CLAIMS} claims")
    for index, claim in enumerate(names):
        _claim(claim, at(at(where, "extra_claims"), index))
    return tuple(dict.fromkeys(names))


def _domains(table: Mapping[str, Any], where: str) -> tuple[str, ...]:
    domains = read_strings(table, "allowed_email_domains", where, what="domain names")
    if len(domains) > MAX_LISTED:
        raise ConfigError(at(where, "allowed_email_domains"), f"at most {MAX_LISTED} domains")
    for index, domain in enumerate(domains):
        if not DOMAIN.fullmatch(domain.lower()):
            raise ConfigError(at(at(where, "allowed_email_domains"), index),
                              "must be a domain name like example.com (no @, no wildcard)")
    return tuple(dict.fromkeys(d.lower() for d in domains))


def _groups(table: Mapping[str, Any], where: str) -> tuple[str, ...]:
    groups = read_strings(table, "required_groups", where, what="group names")
    if len(groups) > MAX_LISTED or any(len(g) > 256 for g in groups):
        raise ConfigError(at(where, "required_groups"), f"at most {MAX_LISTED} groups of at most 256 characters")
    return tuple(dict.fromkeys(groups))


def _client_auth(table: Mapping[str, Any], where: str, environ: Mapping[str, str],
                 base_dir: Path) -> tuple[str | None, ClientKey | None]:
    """Exactly one of ``client_secret`` (Core §9 client_secret_basic/_post) and ``private_key_file``."""
    if ("client_secret" in table) == ("private_key_file" in table):
        raise ConfigError(where, "set exactly one of client_secret or private_key_file (private_key_jwt)")
    if "client_secret" in table:
        return secret_value(table["client_secret"], at(where, "client_secret"), environ, None, non_empty=True), None
    key = at(where, "private_key_file")
    file = table["private_key_file"]
    if not isinstance(file, str) or not file:
        raise ConfigError(key, "must be a path to a PEM or JWK file of a private key")
    return None, read_client_key(base_dir / Path(file).expanduser(), key)


def read_client_key(path: Path, where: str) -> ClientKey:
    """A private EC (P-256, P-384) or RSA key from a PEM file or a JWK (JSON) file; its ``kid`` is the JWK's own or
    its RFC 7638 thumbprint."""
    try:
        text = path.read_bytes()
    except OSError as exc:
        raise ConfigError(where, f"cannot read {path}: {exc.strerror}") from None
    declared: Mapping[str, Any] = {}
    try:
        if text.lstrip().startswith(b"{"):
            declared = json.loads(text)
            if not isinstance(declared, dict) or declared.get("kty") not in ("EC", "RSA"):
                raise ConfigError(where, "must be a JWK of an EC or RSA private key")
            imported: Any = JWKRegistry.import_key(dict(declared))
        else:
            imported = _pem_key(text)
    except (JoseError, ValueError, TypeError, KeyError):
        raise ConfigError(where, f"{path} holds no EC or RSA private key (PEM or JWK)") from None
    if not isinstance(imported, ECKey | RSAKey) or not imported.is_private:
        raise ConfigError(where, "must hold a private key (EC P-256/P-384 or RSA), not a public one")
    algorithm = _algorithm(imported, declared.get("alg"), where)
    kid = declared.get("kid") if isinstance(declared.get("kid"), str) else imported.thumbprint()
    return ClientKey(imported, algorithm, str(kid))


def _pem_key(text: bytes) -> ECKey | RSAKey:
    try:
        return ECKey.import_key(text)
    except (JoseError, ValueError, TypeError):
        return RSAKey.import_key(text)


def _algorithm(key: ECKey | RSAKey, declared: Any, where: str) -> str:
    if isinstance(key, RSAKey):
        if key.raw_value.key_size < MIN_RSA_BITS:
            raise ConfigError(where, f"an RSA key must have at least {MIN_RSA_BITS} bits")
        return declared if declared in RSA_ALGORITHMS else "RS256"
    curve = key.as_dict(private=False).get("crv")
    if curve not in CURVE_ALGORITHMS:
        raise ConfigError(where, "an EC key must be on P-256 or P-384")
    return CURVE_ALGORITHMS[curve]
