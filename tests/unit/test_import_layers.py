"""Issue 17, item 5: no import cycles between Deputy's modules, and no layer imports a higher one.

The graph is read from the source (``ast``), never by importing it, so a cycle that Python happens to
survive today still fails here. Every ``import`` and ``from … import`` counts wherever it stands:

- **inside a function**: such an import runs later, but the two modules still need each other, and
  moving an import into a function is exactly how a cycle is hidden (``config`` ↔ ``oauth`` and
  ``audit.log`` ↔ ``audit.witness_push`` were);
- **under ``if TYPE_CHECKING:``**: a type a module names is part of its interface, so a lower layer
  naming a higher layer's type depends on it as much as one calling it; allowing these would let a
  cycle or an upward dependency live on in the annotations. Deputy has none that cross a layer;
- ``importlib.import_module`` / ``__import__`` are refused outright: they would hide an edge.

An import of ``a.b.c`` also runs ``a/__init__`` and ``a/b/__init__``; those edges are not added (a
package's own modules import their siblings through it all the time, harmlessly). Instead a package's
``__init__`` may sit no higher than the lowest of its modules, so what it imports is allowed to every
module that triggers it.

Layers, lowest first (a module imports only from its own layer or below):

===  ============  =========================================================================================
 0   base          values, formats and tools any layer may use: act_chain, bounded_json, canonical_json, clock,
                   config_values, cookie_scope, display_text, exact_json, hashing, jwks_rules, keys, limits,
                   numeric_date, outbound_http, page_paths, rate_limit, forwarded_client, handles; the audit log's
                   formats (note, checkpoint, cosignature, log_keys, merkle, records); telemetry (metrics, traces,
                   logs)
 1   config        config, config_approvals, config_clients, config_identity_providers, config_servers,
                   client_trust, delegation_rules, starter, audit.settings (config reads ``[audit]`` through
                   it, hence the formats in layer 0), telemetry.settings
 2   storage       deputy.storage
 3   policy/audit  deputy.policy; the rest of deputy.audit (the log, its witnesses, verification, export)
 4   components    oauth's protocol pieces (tokens, clients and their documents and keys, assertions, trusted
                   issuers, errors, PKCE, redirect URIs, admission), deputy.gateway, deputy.federation (the
                   OpenID Connect relying party: never storage or pages)
 5   services      deputy.services: the shared parts, built from layers 2-4 and passed down to layer 6
 6   endpoints     oauth's HTTP endpoints (authorize, token and its grants, registration, introspection,
                   revocation, metadata, client authentication), deputy.web
 7   app           app, cors, listener, request_limits
 8   commands      deputy.cli, deputy.demo, ``python -m deputy``
===  ============  =========================================================================================

The issue's order (storage < policy/audit < oauth/gateway/web < app/services < cli) refined as the code
needs: ``Services`` is the container oauth's endpoints and the pages receive, and it holds oauth's token
validator, client registry, client keys and trusted issuers, so ``deputy.services`` sits between oauth's
components and its endpoints, and deputy.oauth spans two layers. The gateway takes no ``Services``, so it
stays with the components. Between subpackages (``deputy/<name>/``) imports go one way only: no
subpackage imports one that imports it back, however the modules' layers would allow it.

Every module must be placed (a new module fails here until it is given a layer). ``name.*`` places a
package and everything under it; a bare name places that one module. Of two matches the more specific wins.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

OAUTH_COMPONENTS = ("access_tokens", "admission", "client_assertions", "client_documents", "client_keys",
                    "client_metadata", "clients", "document_fetcher", "errors", "forms", "pkce", "redirect_uris",
                    "software_statements", "trusted_issuers")
OAUTH_ENDPOINTS = ("authorize", "client_auth", "introspection", "metadata", "presented_tokens", "registration",
                   "revocation", "token")
AUDIT_FORMATS = ("note", "checkpoint", "cosignature", "log_keys", "merkle", "records")
AUDIT_LOG = ("bundle", "export", "log", "log_plan", "rotation", "sequencer", "sqlite_writer", "witness",
             "witness_push", "witness_store")

LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("base", ("deputy", "act_chain", "bounded_json", "canonical_json", "clock", "config_values", "cookie_scope",
              "display_text", "exact_json", "hashing", "jwks_rules", "keys", "limits", "numeric_date", "outbound_http",
              "worker_identity",
              "outbound_checked", "page_paths", "rate_limit", "forwarded_client", "handles", "origins", "audit",
              *(f"audit.{m}" for m in AUDIT_FORMATS),
              "telemetry", "telemetry.logs", "telemetry.metrics", "telemetry.tracing", "telemetry.trace_export",
              "telemetry.trace_settings", "telemetry.trace_context", "telemetry.metrics_listener")),
    ("config", ("config", "config_approvals", "config_clients", "config_connections", "config_identity_providers",
                "config_servers",
                "client_trust", "delegation_rules", "starter", "audit.settings", "telemetry.settings")),
    ("storage", ("storage.*",)),
    ("policy/audit", ("policy.*", "audit.verify.*", *(f"audit.{m}" for m in AUDIT_LOG))),
    ("components", ("oauth", *(f"oauth.{m}" for m in OAUTH_COMPONENTS), "gateway.*", "federation.*", "connections.*")),
    ("services", ("services",)),
    ("endpoints", (*(f"oauth.{m}" for m in OAUTH_ENDPOINTS), "oauth.grants.*", "web.*")),
    ("app", ("app", "cors", "listener", "request_limits")),
    ("commands", ("cli.*", "demo.*", "__main__")),
)


@dataclass(frozen=True, slots=True)
class Edge:
    importer: str
    imported: str
    line: int

    def __str__(self) -> str:
        return f"{self.importer} (line {self.line}) imports {self.imported}"


@dataclass(frozen=True, slots=True)
class Graph:
    packages: frozenset[str]  # the modules that are packages (an __init__.py)
    edges: Mapping[str, tuple[Edge, ...]]  # every module, with the package's own modules it imports
    dynamic: tuple[str, ...]  # importlib.import_module / __import__ calls, as "module (line n)"


def module_files(root: Path, package: str) -> dict[str, Path]:
    files = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return files


def _imports(name: str, path: Path, is_package: bool, known: AbstractSet[str], package: str) -> Iterable[Edge]:
    here = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):  # every depth: see the docstring
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == package or alias.name.startswith(package + "."):
                    yield Edge(name, alias.name, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")[: len(here.split(".")) - (node.level - 1)]
                source = ".".join([*base, node.module] if node.module else base)
            else:
                source = node.module or ""
            if source != package and not source.startswith(package + "."):
                continue
            for alias in node.names:
                # `from deputy.x import y` imports the module deputy.x.y when there is one, else a name of deputy.x.
                submodule = f"{source}.{alias.name}"
                yield Edge(name, submodule if submodule in known else source, node.lineno)


def _dynamic(name: str, path: Path) -> Iterable[str]:
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Call):
            called = node.func
            if (isinstance(called, ast.Name) and called.id == "__import__") or (
                    isinstance(called, ast.Attribute) and called.attr == "import_module"):
                yield f"{name} (line {node.lineno})"


def import_graph(root: Path, package: str) -> Graph:
    files = module_files(root, package)
    packages = frozenset(n for n, p in files.items() if p.name == "__init__.py")
    known = frozenset(files)
    edges = {n: tuple(sorted(set(_imports(n, p, n in packages, known, package)), key=lambda e: (e.line, e.imported)))
             for n, p in files.items()}
    dynamic = tuple(d for n, p in files.items() for d in _dynamic(n, p))
    return Graph(packages, edges, dynamic)


def strongly_connected(nodes: Iterable[str], successors: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the groups of nodes that all reach each other (a group of one only with a self-loop)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(successors.get(node, ())):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1 or node in successors.get(node, ()):
                groups.append(sorted(group))

    for node in sorted(nodes):
        if node not in index:
            visit(node)
    return groups


def one_cycle(group: list[str], edges: Mapping[str, tuple[Edge, ...]]) -> list[Edge]:
    """A shortest cycle through the group's first module, as the import statements that make it."""
    start = group[0]
    members = set(group)
    paths: dict[str, list[Edge]] = {start: []}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for edge in edges.get(node, ()):
                if edge.imported == start:
                    return [*paths[node], edge]
                if edge.imported in members and edge.imported not in paths:
                    paths[edge.imported] = [*paths[node], edge]
                    following.append(edge.imported)
        frontier = following
    raise AssertionError(f"no cycle through {start}")  # a strongly connected group always has one


def module_cycles(graph: Graph) -> list[str]:
    successors = {n: {e.imported for e in es} for n, es in graph.edges.items()}
    return ["; ".join(map(str, one_cycle(group, graph.edges)))
            for group in strongly_connected(graph.edges, successors)]


def subpackage_cycles(graph: Graph) -> list[str]:
    """Cycles between the top-level subpackages, each step shown by one import that makes it."""
    def subpackage(module: str) -> str | None:
        top = ".".join(module.split(".")[:2])
        return top if "." in module and top in graph.packages else None

    example: dict[str, dict[str, Edge]] = {}  # subpackage -> subpackage it imports -> the first such import
    for edges in graph.edges.values():
        for edge in edges:
            source, target = subpackage(edge.importer), subpackage(edge.imported)
            if source and target and source != target:
                example.setdefault(source, {}).setdefault(target, edge)
    contracted = {source: tuple(Edge(source, target, 0) for target in targets) for source, targets in example.items()}
    return ["; ".join(str(example[step.importer][step.imported]) for step in one_cycle(group, contracted))
            for group in strongly_connected(contracted, {s: set(ts) for s, ts in example.items()})]


def layer_of(module: str, package: str, layers: tuple[tuple[str, tuple[str, ...]], ...]) -> int | None:
    best: tuple[int, int] | None = None  # (specificity, layer)
    for number, (_name, patterns) in enumerate(layers):
        for pattern in patterns:
            full = package if pattern == package else f"{package}.{pattern.removesuffix('.*')}"
            if pattern.endswith(".*"):
                matched = module == full or module.startswith(full + ".")
                specificity = len(full.split("."))
            else:
                matched, specificity = module == full, 1_000
            if matched and (best is None or specificity > best[0]):
                best = (specificity, number)
    return None if best is None else best[1]


def layering_faults(graph: Graph, package: str, layers: tuple[tuple[str, tuple[str, ...]], ...]) -> list[str]:
    faults = []
    placed = {m: layer_of(m, package, layers) for m in graph.edges}
    faults += [f"{m} has no layer: add it to LAYERS" for m, layer in sorted(placed.items()) if layer is None]
    listed = [pattern for _name, patterns in layers for pattern in patterns]
    faults += [f"LAYERS names {p} twice: keep one" for p in sorted({p for p in listed if listed.count(p) > 1})]
    for _name, patterns in layers:
        for pattern in patterns:
            full = package if pattern == package else f"{package}.{pattern.removesuffix('.*')}"
            if full not in graph.edges:
                faults.append(f"LAYERS names {pattern}, which is no module: take it out")
    for module, edges in sorted(graph.edges.items()):
        for edge in edges:
            mine, theirs = placed[module], placed.get(edge.imported)
            if mine is not None and theirs is not None and theirs > mine:
                faults.append(f"{edge}: layer {layers[mine][0]} imports layer {layers[theirs][0]}")
    for pkg in sorted(graph.packages):
        own = placed[pkg]
        below = [layer for m, layer in placed.items() if m.startswith(pkg + ".") and layer is not None]
        if own is not None and below and own > min(below):
            faults.append(f"{pkg}/__init__ (layer {layers[own][0]}) runs before modules of a lower layer")
    return faults


# Deputy itself


@pytest.fixture(scope="module")
def deputy() -> Graph:
    return import_graph(ROOT, "deputy")


def test_no_module_imports_one_that_imports_it_back(deputy: Graph) -> None:
    cycles = module_cycles(deputy)
    assert not cycles, "\n".join(cycles)


def test_no_subpackage_imports_one_that_imports_it_back(deputy: Graph) -> None:
    cycles = subpackage_cycles(deputy)
    assert not cycles, "\n".join(cycles)


def test_every_module_has_a_layer_and_imports_none_above_it(deputy: Graph) -> None:
    faults = layering_faults(deputy, "deputy", LAYERS)
    assert not faults, "\n".join(faults)


def test_no_import_by_name_at_run_time(deputy: Graph) -> None:
    assert deputy.dynamic == ()


# The checks themselves, on small packages made for the purpose: each must be able to fail.

SMALL_LAYERS = (("low", ("small", "low", "pkg.*")), ("high", ("high",)))


def small_package(root: Path, files: Mapping[str, str]) -> Graph:
    for name, text in {"__init__.py": "", "pkg/__init__.py": "", **files}.items():
        (root / "small" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "small" / name).write_text(text)
    return import_graph(root, "small")


def test_a_cycle_through_an_import_inside_a_function_is_found(tmp_path: Path) -> None:
    graph = small_package(tmp_path, {"low.py": "def later():\n    from small import high\n",
                                     "high.py": "import small.low\n"})
    assert module_cycles(graph) == ["small.high (line 1) imports small.low; small.low (line 2) imports small.high"]


def test_an_import_for_type_checking_only_counts(tmp_path: Path) -> None:
    graph = small_package(tmp_path, {"low.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                                               "    from .high import Thing\n",
                                     "high.py": "class Thing: ...\n"})
    assert layering_faults(graph, "small", SMALL_LAYERS) == [
        "small.low (line 3) imports small.high: layer low imports layer high"]


def test_relative_imports_resolve_to_the_module_they_name(tmp_path: Path) -> None:
    graph = small_package(tmp_path, {"high.py": "", "pkg/a.py": "from .. import high\nfrom . import b\n",
                                     "pkg/b.py": "from ..pkg.a import x\n"})
    assert {str(e) for e in graph.edges["small.pkg.a"]} == {"small.pkg.a (line 1) imports small.high",
                                                            "small.pkg.a (line 2) imports small.pkg.b"}
    assert module_cycles(graph) == ["small.pkg.a (line 2) imports small.pkg.b; "
                                    "small.pkg.b (line 1) imports small.pkg.a"]


def test_a_module_without_a_layer_and_a_stale_entry_are_named(tmp_path: Path) -> None:
    graph = small_package(tmp_path, {"low.py": "", "new.py": ""})
    assert layering_faults(graph, "small", SMALL_LAYERS) == [
        "small.new has no layer: add it to LAYERS", "LAYERS names high, which is no module: take it out"]
    twice = (("low", ("small", "low", "pkg.*")), ("high", ("low",)))
    assert layering_faults(graph, "small", twice)[1] == "LAYERS names low twice: keep one"


def test_a_package_init_above_its_modules_is_named(tmp_path: Path) -> None:
    graph = small_package(tmp_path, {"low.py": "", "high.py": "", "pkg/x.py": ""})
    layers = (("low", ("small", "low", "pkg.x")), ("high", ("high", "pkg")))
    assert layering_faults(graph, "small", layers) == [
        "small.pkg/__init__ (layer high) runs before modules of a lower layer"]


def test_subpackages_importing_each_other_are_found(tmp_path: Path) -> None:
    graph = small_package(tmp_path, {"a/__init__.py": "", "a/one.py": "from small.b.two import f\n",
                                     "b/__init__.py": "", "b/two.py": "def f():\n    import small.a.three\n",
                                     "a/three.py": ""})
    assert module_cycles(graph) == []
    assert subpackage_cycles(graph) == [
        "small.a.one (line 1) imports small.b.two; small.b.two (line 2) imports small.a.three"]


def test_an_import_by_name_is_found(tmp_path: Path) -> None:
    graph = small_package(tmp_path, {"low.py": "import importlib\nimportlib.import_module('small.high')\n"})
    assert graph.dynamic == ("small.low (line 2)",)
