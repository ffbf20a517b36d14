"""``deputy token inspect``: what an access token says, and whether this Deputy would accept it.

It decodes a JWT access token (RFC 9068) and explains it for an operator: the header,
whether the signature verifies against the key ring in Deputy's data directory (read
only: nothing is created or rotated), issuer, subject, client, audience, scope, times
(UTC and relative), ``txn``, the delegation chain of ``act`` in words (RFC 8693 §4.1)
and ``may_act`` (§4.4). Without a configuration it only decodes, and says the signature
was not checked. It does not look at the database, so a revoked grant is not seen here.

Everything printed comes from the token, which anyone can write: values are shown with
control characters escaped and rich markup neutralised. The token is read bounded (at most
64 KiB, what a request header can carry); decoding and checking are :mod:`deputy.cli.token_check`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Column, Table

from deputy import clock
from deputy.act_chain import Actor, MalformedChain, parse_act
from deputy.cli.common import ConfigOption, console, err
from deputy.cli.small_input import TOKEN_BYTES, InputTooLarge, read_small_stdin
from deputy.cli.token_check import (
    EXIT_UNREADABLE,
    Decoded,
    Malformed,
    Verification,
    claim_text,
    decode,
    relative,
    verify,
)
from deputy.numeric_date import is_time

if TYPE_CHECKING:
    from deputy.config import Settings

tokens_app = typer.Typer(help="Access tokens.", no_args_is_help=True)

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
        return f"{claim_text(value)} (not a time)"
    absolute = datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")  # is_time bounds it
    when = relative(value, now)
    if expiry:
        when = f"expired {when}" if value <= now else f"expires {when}"
    return f"{absolute} ({when})"


def _safe(value: Any) -> str:
    return escape(claim_text(value))


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
        table.add_row("delegation", "\n".join(escape(claim_text(line)) for line in
                                              ([summary] if summary else []) + chain_lines(claims)))
    else:
        table.add_row("delegation", "none: the client acts for the subject directly")
    table.add_row("may act", escape(claim_text(may_act_words(claims.get("may_act")))))
    for name in sorted(set(claims) - KNOWN):
        table.add_row(_safe(name), _safe(claims[name]))
    console.print(table)
    if verification.valid:
        note = "" if verification.signature == "valid" else " (signature not checked)"
        console.print(f"[green]valid[/]{note}: expires {escape(relative(claims['exp'], now))}")
    else:
        console.print("[red]not valid[/]: " + "; ".join(escape(p) for p in verification.problems))


def _read_token(token: str) -> str:
    text = read_small_stdin(TOKEN_BYTES, what="an access token") if token == "-" else token
    if len(text) > TOKEN_BYTES:
        raise InputTooLarge(f"longer than {TOKEN_BYTES:,} characters, more than an access token can be")
    text = text.strip()
    if text[:7].lower() == "bearer ":
        text = text[7:].strip()
    return text


def _settings(config: Path | None) -> Settings | None:
    from deputy.config import ConfigError, load_settings

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
    from joserfc.errors import JoseError

    now = clock.wall()
    try:
        text = _read_token(token)
    except InputTooLarge as exc:
        err.print(f"[red]not a JWT: {escape(str(exc))}[/red]")
        raise typer.Exit(EXIT_UNREADABLE) from None
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
