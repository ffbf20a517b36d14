"""``deputy policy``: tools for policy authors — validate, print the schema, run test cases, explain a decision
(:mod:`deputy.cli.policy_explain`).

The tool list the schema is built from comes from the live upstream (``--server NAME``:
Deputy reads its ``tools/list`` as the gateway does, with the server's credentials, and
the server's configured ``policies`` directory is the default) or from a file
(``--tools``): the JSON of a ``tools/list`` result (a list of tools, ``{"tools": [...]}``
or the whole JSON-RPC response).

Exit codes: 0 success; 1 the policies are invalid (``validate``, ``test``) or a test
case failed (``test``); 2 the input could not be used (tools file missing or not a
tool list, the schema could not be built, a malformed test file). Every policy
problem is printed as ``file:line:col: message``.
"""

from __future__ import annotations

import asyncio
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from deputy import bounded_json
from deputy.act_chain import Actor
from deputy.cli.common import ConfigOption, console, err, settings_or_exit
from deputy.cli.policy_explain import explain
from deputy.cli.small_input import CASES_BYTES, TOOLS_BYTES, read_small
from deputy.display_text import visible_json

if TYPE_CHECKING:
    from deputy.policy import PolicyEngine, PolicySchema
    from deputy.policy.user_attributes import UserAttributes

policy_app = typer.Typer(help="Cedar policies: validate them, see the schema, test them, explain a decision.",
                         no_args_is_help=True)

ToolsOption = Annotated[Path | None, typer.Option("--tools", help="JSON of the server's tools/list result")]
ServerOption = Annotated[str | None, typer.Option("--server", help="read the tools of this configured server")]
PoliciesOption = Annotated[Path | None, typer.Option("--policies", help="directory of *.cedar files "
                                                                         "(default: the server's, else ./policies)")]
DEFAULT_POLICIES = Path("policies")


def _schema_or_exit(tools_file: Path | None, server_name: str | None, config: Path | None,
                    policies: Path | None) -> tuple[PolicySchema, Path]:
    """The schema and the policy directory to use, from ``--tools FILE`` or ``--server NAME``."""
    from deputy.policy import SchemaError, build_schema, load_tools
    from deputy.policy.user_attributes import configured_claims

    if (tools_file is None) == (server_name is None):
        err.print("[red]give exactly one of --tools FILE or --server NAME[/red]")
        raise typer.Exit(2)
    # The extra claims context.user.claims types are the configuration's (with --server, or --tools and --config).
    claims = configured_claims(settings_or_exit(config)) if server_name is not None or config is not None else ()
    if server_name is not None:
        tools, directory = _live_tools(server_name, config)
        source = f"server {server_name}"
    else:
        assert tools_file is not None
        source, directory = str(tools_file), None
        try:
            tools = load_tools(bounded_json.loads(read_small(tools_file, TOOLS_BYTES, what="a tools list")))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, SchemaError) as exc:
            err.print(f"[red]{escape(source)}: {escape(str(exc))}[/red]")
            raise typer.Exit(2) from None
    try:
        schema = build_schema(tools, claims)
    except SchemaError as exc:
        err.print(f"[red]{escape(source)}: {escape(str(exc))}[/red]")
        raise typer.Exit(2) from None
    for name, why in schema.skipped.items():
        err.print(f"[yellow]warning: tool {escape(name)} has no action, calls to it are denied: {escape(why)}[/yellow]")
    return schema, policies or directory or DEFAULT_POLICIES


def _live_tools(server_name: str, config: Path | None) -> tuple[list[dict[str, Any]], Path | None]:
    # Imported here: the MCP client costs about a second at start, and only this command needs it.
    from deputy.gateway.tool_catalog import CatalogUnavailable, fetch_tools
    from deputy.gateway.upstream_credentials import upstream_credentials
    from deputy.keys import KeyRing

    settings = settings_or_exit(config)
    server = settings.servers.get(server_name)
    if server is None:
        err.print(f"[red]no server {escape(server_name)} in the configuration[/red]")
        raise typer.Exit(2)
    credentials = upstream_credentials(server, KeyRing.open(settings.data_dir / "keys", settings.access_token_ttl),
                                       settings.issuer)
    try:
        return asyncio.run(fetch_tools(server, credentials, settings.issuer)), server.policies
    except CatalogUnavailable as exc:
        err.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(2) from None


def _engine_or_exit(policies: Path, schema: PolicySchema) -> PolicyEngine:
    from deputy.policy import PolicyEngine, PolicyLoadError

    try:
        return PolicyEngine(policies, schema)
    except PolicyLoadError as exc:
        for problem in exc.problems:
            err.print(escape(str(problem if problem.line else f"{problem.file}: {problem.message}")), soft_wrap=True)
        err.print(f"[red]{len(exc.problems)} problem(s); the policy set in {escape(str(policies))} is not valid[/red]")
        raise typer.Exit(1) from None


@policy_app.command("validate")
def validate(tools: ToolsOption = None, server: ServerOption = None, policies: PoliciesOption = None,
             config: ConfigOption = None) -> None:
    """Check every policy in the directory against the schema built from the tools."""
    schema, directory = _schema_or_exit(tools, server, config, policies)
    engine = _engine_or_exit(directory, schema)
    loaded = engine.loaded
    console.print(f"{len(loaded.sources)} policies in {len(loaded.files)} file(s) are valid against the schema of "
                  f"{len(schema.tools)} tool(s)\npolicy set version {loaded.version}\nschema version {schema.version}",
                  soft_wrap=True)


@policy_app.command("schema")
def schema_command(tools: ToolsOption = None, server: ServerOption = None, config: ConfigOption = None,
                   as_json: Annotated[bool, typer.Option("--json", help="the JSON form instead")] = False) -> None:
    """Print the Cedar schema policies are validated and evaluated with."""
    schema, _ = _schema_or_exit(tools, server, config, None)
    # Tool names and descriptions are the upstream's: the JSON form gets JSON escapes for what would act on a
    # terminal (the Cedar form's writer already escapes them).
    typer.echo(visible_json(schema.json_text) if as_json else schema.cedar_text)


@dataclass(frozen=True, slots=True)
class _Caller:
    user: str
    agent: str
    server: str
    user_attributes: UserAttributes
    scopes: frozenset[str] = frozenset()
    actors: tuple[Actor, ...] = ()
    txn: str | None = None
    issuer: str = ""  # Deputy's: hops with this iss (or none) are its own clients' (context.actor_client_ids)


def _user_attributes(entry: dict[str, Any], user: str) -> UserAttributes:
    """``groups``, ``email``, ``name``, ``idp`` (default ``local``) and ``claims`` of a case, checked like a token's."""
    from deputy.policy.user_attributes import UserAttributes

    groups, claims = entry.get("groups", []), entry.get("claims", {})
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise ValueError("groups must be a list of strings")
    if not isinstance(claims, dict) or not all(isinstance(v, str) for v in claims.values()):
        raise ValueError("claims must be a table of strings")
    texts = {key: entry.get(key, default) for key, default in (("email", ""), ("name", user), ("idp", "local"))}
    if not all(isinstance(value, str) for value in texts.values()):
        raise ValueError("email, name and idp must be strings")
    return UserAttributes(texts["idp"], texts["name"], texts["email"], frozenset(groups), claims)


@dataclass(frozen=True, slots=True)
class _Case:
    name: str
    caller: _Caller
    method: str
    target: str
    arguments: Any
    expect: str
    policies: tuple[str, ...] | None
    approved: bool = False
    registration: str = "unknown"
    time: int | None = None


def _cases(path: Path) -> list[_Case]:
    from deputy.policy import Outcome
    from deputy.policy.schema import TOOLS_CALL

    document = bounded_json.loads_toml(read_small(path, CASES_BYTES, what="a file of test cases"))
    defaults = document.get("defaults", {})
    cases = []
    outcomes = tuple(str(outcome) for outcome in Outcome)
    for index, raw in enumerate(document.get("case", []), start=1):
        entry = {**defaults, **raw}
        actors = tuple(Actor(a["sub"], a.get("client_id"), a.get("iss")) for a in entry.get("actors", []))
        user = str(entry.get("user", "alice"))
        caller = _Caller(user, str(entry.get("agent", "test-agent")), str(entry.get("server", "demo")),
                         _user_attributes(entry, user), frozenset(entry.get("scopes", [])), actors, entry.get("txn"),
                         str(entry.get("issuer", "")))
        method = str(entry.get("method", TOOLS_CALL))
        target = entry.get("tool", entry.get("prompt", entry.get("uri")))
        if not isinstance(target, str) or entry.get("expect") not in outcomes:
            raise ValueError(f"case {index}: needs tool, prompt or uri, and expect = " + "|".join(outcomes))
        policies = entry.get("policies")
        cases.append(_Case(str(raw.get("name", f"case {index}")), caller, method, target,
                           entry.get("arguments"), entry["expect"], None if policies is None else tuple(policies),
                           bool(entry.get("approved", False)), str(entry.get("registration", "unknown")),
                           entry.get("time")))
    return cases


@policy_app.command("test")
def test_command(cases_file: Annotated[Path, typer.Argument(help="TOML test cases ([[case]] tables)")],
                 tools: ToolsOption = None, server: ServerOption = None, policies: PoliciesOption = None,
                 config: ConfigOption = None) -> None:
    """Run test cases: each a request and the outcome (and optionally the determining policies) it must get.

    A case: ``[[case]]`` with ``name``, ``tool`` (or ``prompt``/``uri`` for other methods), ``method`` (default
    ``tools/call``), ``arguments``, ``user``, ``agent``, ``scopes``, ``actors`` (``[{sub, client_id, iss}]``,
    current actor first), ``issuer`` (Deputy's: an actor with another ``iss`` is not in
    ``context.actor_client_ids``), ``txn``, the user's ``groups``, ``email``, ``name`` (default: ``user``), ``idp``
    (default ``local``) and ``claims`` (a table of strings), ``approved``, ``time``, ``expect`` and optional
    ``policies``; a ``[defaults]`` table applies to every case.
    """
    schema, directory = _schema_or_exit(tools, server, config, policies)
    engine = _engine_or_exit(directory, schema)
    try:
        cases = _cases(cases_file)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, ValueError, KeyError, TypeError) as exc:
        err.print(f"[red]{escape(str(cases_file))}: {escape(str(exc))}[/red]")
        raise typer.Exit(2) from None
    table = Table("case", "expected", "got", "determining policies", "")
    failed = 0
    for case in cases:
        decision = engine.decide(case.caller, case.method, case.target, case.arguments, approved=case.approved,
                                 registration=case.registration, now=case.time)
        ok = str(decision.outcome) == case.expect and (case.policies is None
                                                        or sorted(case.policies) == sorted(decision.determining))
        failed += not ok
        got = str(decision.outcome) + "".join(f"\n{e}" for e in decision.errors)
        expected = case.expect + (f" {list(case.policies)}" if case.policies else "")
        table.add_row(escape(case.name), escape(expected), escape(got), escape(", ".join(decision.determining)),
                      "[green]ok[/green]" if ok else "[red]FAIL[/red]")
    console.print(table)
    console.print(f"{len(cases) - failed} passed, {failed} failed (policy set version {engine.version[:12]})")
    if failed:
        raise typer.Exit(1)


policy_app.command("explain")(explain)
