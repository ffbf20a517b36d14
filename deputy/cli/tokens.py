"""``deputy token inspect``: what an access token says, and whether this Deputy would accept it.

It decodes a JWT access token (RFC 9068) and explains it for an operator: the header,
whether the signature verifies against the key ring in Deputy's data directory (read
only: nothing is created or rotated), issuer, subject, client, audience, scope, times
(UTC and relative), ``txn``, the delegation chain of ``act`` in words (RFC 8693 §4.1)
and ``may_act`` (§4.4). Without a configuration it only decodes, and says the signature
was not checked. It does not look at the database, so a revoked grant is not seen here.

Everything printed comes from the token, which anyone can write: values are shown with
control characters escaped and rich markup neutralised.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from joserfc import jws
from joserfc.errors import JoseError
from joserfc.jwk import ECKey
from rich.markup import escape
from rich.table import Column, Table

from deputy.act_chain import Actor, MalformedChain, parse_act
from deputy.cli.common import ConfigOption, console, err
from deputy.config import ConfigError, Settings, load_settings
from deputy.keys import ALGORITHM, KeyRing
from deputy.numeric_date import is_time
from deputy.oauth.access_tokens import TOKEN_TYPES

tokens_app = typer.Typer(help="Access tokens.", no_args_is_help=True)

EXIT_OK = 0
EXIT_UNREADABLE = 1  # not a JWT, or the configuration or key ring could not be read
EXIT_INVALID = 2  # decoded, but not a token this Deputy accepts

REQUIRED_CLAIMS = ("sub", "client_id", "jti")


class Malformed(ValueError):
    """Not a compact JWS whose header and payload are JSON objects."""


@dataclass(frozen=True, slots=True)
class Decoded:
    header: dict[str, Any]
    claims: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RingKey:
    kid: str
    key: ECKey
    status: str  # "active", "retired" (still published) or "withdrawn" (no longer published)


@dataclass(slots=True)
class Verification:
    signature: str  # "valid", "invalid", "unknown_key" or "not_checked"
    detail: str
    key_status: str | None = None
    issuer_ok: bool | None = None
    expired: bool | None = None
    expires_in: int | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def valid(self) -> bool:
        return not self.problems

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.valid else EXIT_INVALID

    def as_dict(self) -> dict[str, Any]:
        return {"signature": self.signature, "detail": self.detail, "key_status": self.key_status,
                "issuer_ok": self.issuer_ok, "expired": self.expired, "expires_in": self.expires_in,
                "problems": self.problems, "valid": self.valid, "exit_code": self.exit_code}


# --- decoding and checking --------------------------------------------------------------------------

def decode(token: str) -> Decoded:
    parts = token.split(".")
    if len(parts) != 3:
        raise Malformed(f"a JWT has 3 dot-separated parts, this has {len(parts)}"
                        + (" (5 parts: an encrypted JWE, not a Deputy access token)" if len(parts) == 5 else ""))
    return Decoded(_json_part(parts[0], "header"), _json_part(parts[1], "payload"))


def _json_part(part: str, what: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError):
        raise Malformed(f"the {what} is not base64url-encoded JSON") from None
    if not isinstance(value, dict):
        raise Malformed(f"the {what} is not a JSON object")
    return value


def read_ring(directory: Path, max_token_lifetime: int, now: float) -> list[RingKey] | None:
    """Every key in the ring, with whether Deputy still publishes it; None when there is no ring."""
    ring = KeyRing(directory, max_token_lifetime)  # the constructor reads nothing; open() would create a key
    if not (directory / "keys.json").exists():
        return None
    found = []
    for entry in ring.entries():
        key = ECKey.import_key((directory / f"{entry.kid}.pem").read_bytes(),
                               parameters={"kid": entry.kid, "alg": ALGORITHM})
        if entry.retired_at is None:
            status = "active"
        elif entry.retired_at + max_token_lifetime >= now:
            status = "retired"
        else:
            status = "withdrawn"
        found.append(RingKey(entry.kid, key, status))
    return found


def check_signature(token: str, header: Mapping[str, Any], keys: Sequence[RingKey],
                    where: Path) -> tuple[str, str, str | None]:
    """(signature status, what it means, status of the key that signed)."""
    alg = header.get("alg")
    if alg != ALGORITHM:
        return "invalid", f"alg {_text(alg)}: Deputy signs and accepts only {ALGORITHM}", None
    kid = header.get("kid")
    candidates = [k for k in keys if k.kid == kid] if isinstance(kid, str) else list(keys)
    if not candidates:
        named = f"kid {_text(kid)} is" if kid is not None else "no kid, and no key"
        return "unknown_key", f"{named} not one of this Deputy's keys ({where}): signed by someone else", None
    for candidate in candidates:
        try:
            jws.deserialize_compact(token, candidate.key, algorithms=[ALGORITHM])
        except (JoseError, ValueError, TypeError):
            continue
        if candidate.status == "withdrawn":
            return ("invalid", f"signed by key {candidate.kid}, retired long enough ago that Deputy no longer "
                    "publishes or accepts it", candidate.status)
        return "valid", f"verified with key {candidate.kid} ({candidate.status})", candidate.status
    named = f"key {candidates[0].kid}" if len(candidates) == 1 else "any key of this Deputy"
    return "invalid", f"does not verify with {named}: altered after signing, or forged", None


def verify(token: str, decoded: Decoded, settings: Settings | None, now: float) -> Verification:
    if settings is None:
        result = Verification("not_checked", "no configuration (--config or DEPUTY_CONFIG): decoded only")
    else:
        keys_dir = settings.data_dir / "keys"
        keys = read_ring(keys_dir, settings.access_token_ttl, now)
        if keys is None:
            result = Verification("not_checked", f"no key ring at {keys_dir}")
        else:
            status, detail, key_status = check_signature(token, decoded.header, keys, keys_dir)
            result = Verification(status, detail, key_status)
            if status != "valid":
                result.problems.append(f"signature: {detail}")
    claims = decoded.claims
    typ = decoded.header.get("typ")
    if not isinstance(typ, str) or typ.lower() not in TOKEN_TYPES:
        result.problems.append(f"typ is {_text(typ)}, not at+jwt: not an access token (RFC 9068 §4)")
    if settings is not None:
        result.issuer_ok = claims.get("iss") == settings.issuer
        if not result.issuer_ok:
            result.problems.append(f"issuer {_text(claims.get('iss'))} is not this Deputy ({settings.issuer})")
    exp, iat, nbf = claims.get("exp"), claims.get("iat"), claims.get("nbf")
    if is_time(exp):
        result.expires_in = int(exp - now)
        result.expired = exp <= now
        if result.expired:
            result.problems.append(f"expired {_relative(exp, now)}")
    else:
        result.problems.append("exp is missing or not a number")
    if not is_time(iat):
        result.problems.append("iat is missing or not a number")
    elif iat > now + 60:
        result.problems.append(f"issued in the future ({_relative(iat, now)})")
    if nbf is not None and (not is_time(nbf) or nbf > now):
        result.problems.append("not valid yet (nbf)")
    for name in REQUIRED_CLAIMS:
        if not isinstance(claims.get(name), str) or not claims[name]:
            result.problems.append(f"{name} is missing")
    aud = claims.get("aud")
    if not (isinstance(aud, str) or (isinstance(aud, list) and len(aud) == 1 and isinstance(aud[0], str))):
        result.problems.append("aud must name exactly one resource")
    if not isinstance(claims.get("scope", ""), str):
        result.problems.append("scope is not a string")
    try:
        parse_act(claims.get("act"))
    except MalformedChain as exc:
        result.problems.append(f"act: {exc}")
    txn = claims.get("txn")
    if txn is not None and (not isinstance(txn, str) or not txn):
        result.problems.append("txn is not a string")
    return result


# --- explaining -------------------------------------------------------------------------------------

def delegation_summary(claims: Mapping[str, Any]) -> str | None:
    """``agent-b acting via agent-a for user alice``; None for a token that is not delegated."""
    try:
        chain = parse_act(claims.get("act"))
    except MalformedChain:
        return None
    if not chain:
        return None
    current, *earlier = chain
    words = [_actor_name(current), "acting"]
    for actor in earlier:
        words += ["via", _actor_name(actor)]
    words += ["for", _subject(claims)]
    return " ".join(words)


def _actor_name(actor: Actor) -> str:
    return actor.sub if actor.client_id in (None, actor.sub) else f"{actor.sub} (client {actor.client_id})"


def _subject(claims: Mapping[str, Any]) -> str:
    # Deputy writes auth_time only when a user signed in; otherwise the subject is a client itself.
    kind = "user" if "auth_time" in claims else "subject"
    return f"{kind} {claims.get('sub')}"


def chain_lines(claims: Mapping[str, Any]) -> list[str]:
    try:
        chain = parse_act(claims.get("act"))
    except MalformedChain as exc:
        return [f"malformed act: {exc}"]
    lines = []
    for i, actor in enumerate(chain, 1):
        role = " (current)" if i == 1 else " (first)" if i == len(chain) else ""
        lines.append(f"{i}. {_actor_name(actor)}{role}, iss {actor.iss or '(none)'}")
    return lines


def may_act_words(may_act: Any) -> str:
    if may_act is None:
        return "nobody (no may_act: it cannot be exchanged to act for its subject)"
    if not isinstance(may_act, Mapping) or not may_act:
        return f"malformed may_act: {json.dumps(may_act)}"
    parts = []
    for name, allowed in may_act.items():
        values = allowed if isinstance(allowed, list) else [allowed]
        label = {"client_id": "client", "sub": "sub", "iss": "issuer"}.get(name, name)
        parts.append(f"{label}{'s' if len(values) > 1 else ''} " + ", ".join(str(v) for v in values))
    return " and ".join(parts) + " may act for its subject"


def _when(value: Any, now: float, expiry: bool = False) -> str:
    if not is_time(value):
        return f"{_text(value)} (not a time)"
    absolute = datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")  # is_time bounds it
    relative = _relative(value, now)
    if expiry:
        relative = f"expired {relative}" if value <= now else f"expires {relative}"
    return f"{absolute} ({relative})"


def _relative(value: float, now: float) -> str:
    delta = int(value - now)
    span = _span(abs(delta))
    return "now" if delta == 0 else f"in {span}" if delta > 0 else f"{span} ago"


def _span(seconds: int) -> str:
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    if seconds < 86400:
        hours, minutes = divmod(seconds // 60, 60)
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{seconds // 86400} d"


def _text(value: Any) -> str:
    """A claim as one line of text: strings as they are, anything else as JSON; control characters escaped."""
    text = value if isinstance(value, str) else json.dumps(value)
    return "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text)


def _safe(value: Any) -> str:
    return escape(_text(value))


KNOWN = {"iss", "sub", "aud", "client_id", "scope", "jti", "iat", "exp", "nbf", "auth_time", "sid", "act",
         "may_act", "txn"}
SIGNATURE_STYLE = {"valid": "green", "not_checked": "yellow"}


def render(decoded: Decoded, verification: Verification, settings: Settings | None, now: float) -> None:
    header, claims = decoded.header, decoded.claims
    table = Table(Column("", no_wrap=True, style="bold"), Column("", overflow="fold"), show_header=False,
                  title="Access token")
    table.add_row("header", " · ".join(f"{n} {_safe(header.get(n, '(none)'))}" for n in ("alg", "kid", "typ")))
    style = SIGNATURE_STYLE.get(verification.signature, "red")
    table.add_row("signature", f"[{style}]{verification.signature.replace('_', ' ')}[/]: "
                               f"{escape(verification.detail)}")
    issuer = _safe(claims.get("iss"))
    if verification.issuer_ok is True:
        issuer += " [green](this Deputy)[/]"
    elif verification.issuer_ok is False:
        issuer += " [red](not this Deputy)[/]"
    table.add_row("issuer", issuer)
    table.add_row("subject", _safe(claims.get("sub")))
    table.add_row("client", _safe(claims.get("client_id")))
    aud = claims.get("aud")
    audience = _safe(aud)
    server = settings.server_for_resource(aud) if settings is not None and isinstance(aud, str) else None
    if server is not None:
        audience += f" (server {escape(server.name)})"
    table.add_row("audience", audience)
    table.add_row("scope", _safe(claims.get("scope", "")) or "(none)")
    table.add_row("issued", escape(_when(claims.get("iat"), now)))
    expires = escape(_when(claims.get("exp"), now, expiry=True))
    table.add_row("expires", f"[red]{expires}[/]" if verification.expired else expires)
    if "nbf" in claims:
        table.add_row("not before", escape(_when(claims["nbf"], now)))
    if "auth_time" in claims:
        table.add_row("user signed in", escape(_when(claims["auth_time"], now)))
    for label, name in (("grant (sid)", "sid"), ("token id (jti)", "jti"), ("txn", "txn")):
        if name in claims:
            table.add_row(label, _safe(claims[name]))
    summary = delegation_summary(claims)
    if "act" in claims:
        table.add_row("delegation", "\n".join(escape(_text(line)) for line in
                                              ([summary] if summary else []) + chain_lines(claims)))
    else:
        table.add_row("delegation", "none: the client acts for the subject directly")
    table.add_row("may act", escape(_text(may_act_words(claims.get("may_act")))))
    for name in sorted(set(claims) - KNOWN):
        table.add_row(_safe(name), _safe(claims[name]))
    console.print(table)
    if verification.valid:
        note = "" if verification.signature == "valid" else " (signature not checked)"
        console.print(f"[green]valid[/]{note}: expires {escape(_relative(claims['exp'], now))}")
    else:
        console.print("[red]not valid[/]: " + "; ".join(escape(p) for p in verification.problems))


def _read_token(token: str) -> str:
    text = sys.stdin.read() if token == "-" else token
    text = text.strip()
    if text[:7].lower() == "bearer ":
        text = text[7:].strip()
    return text


def _settings(config: Path | None) -> Settings | None:
    if config is None and not os.environ.get("DEPUTY_CONFIG"):
        return None
    try:
        return load_settings(config)
    except ConfigError as exc:
        err.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(EXIT_UNREADABLE) from None


@tokens_app.command("inspect")
def tokens_inspect(
    token: Annotated[str, typer.Argument(help="the access token; - reads it from stdin (keeps it out of shell "
                                         "history); a leading 'Bearer ' is ignored")],
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="print header, claims and a verification object "
                                          "as JSON")] = False,
) -> None:
    """Decode an access token and explain it: who, for whom, what, until when, and is it valid here.

    The signature is checked with the key ring in the configured data directory (read only).

    Without a configuration (--config or DEPUTY_CONFIG) the token is only decoded: signature not checked.

    Revocation is not checked here: that needs the database.

    Exit codes: 0 valid (signature verified, or not checked; not expired).

    1 not a JWT, or the configuration or key ring could not be read.

    2 the signature does not verify, the token has expired, or Deputy would refuse it (issuer, typ, claims).
    """
    now = time.time()
    text = _read_token(token)
    try:
        decoded = decode(text)
    except Malformed as exc:
        err.print(f"[red]not a JWT: {escape(str(exc))}[/red]")
        raise typer.Exit(EXIT_UNREADABLE) from None
    settings = _settings(config)
    try:
        verification = verify(text, decoded, settings, now)
    except (OSError, ValueError, JoseError) as exc:
        err.print(f"[red]cannot read the key ring: {escape(str(exc))}[/red]")
        raise typer.Exit(EXIT_UNREADABLE) from None
    if as_json:
        typer.echo(json.dumps({"header": decoded.header, "claims": decoded.claims,
                               "delegation": delegation_summary(decoded.claims),
                               "verification": verification.as_dict()}, indent=2))
    else:
        render(decoded, verification, settings, now)
    raise typer.Exit(verification.exit_code)
