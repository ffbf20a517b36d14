"""Check that every third-party module the installed ``deputy`` package imports is declared (issue 17, item 1).

Run with the Python of a venv that holds a bare install (``pip install .``, no extras): it reads the
installed package's sources, collects every module they import at run time — at the top of a module or
inside a function, so an import made only on a rarely taken path (a witness push, an outside issuer's
keys) counts too — and exits 1 naming each one that is

- not importable in this environment (what would end in ``ModuleNotFoundError``), or
- importable only because some other dependency happens to bring it: the distribution providing it
  must be named in ``[project] dependencies`` itself (PEP 621), or a dependency's next release can
  take it away.

Imports under ``if TYPE_CHECKING:`` are skipped: they never run.
"""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import importlib.util
import re
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path

PACKAGE = "deputy"
DISTRIBUTION = "mcp-deputy"


def _normalized(name: str) -> str:
    # PEP 503 name normalization, which both Requires-Dist and the installed metadata follow loosely.
    return re.sub(r"[-_.]+", "-", name).lower()


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(nodes: Iterable[ast.AST]) -> Iterator[tuple[str, int]]:
    """Top-level module names imported where the code can run, with their line."""
    for node in nodes:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _imports(node.orelse)
            continue
        if isinstance(node, ast.Import):
            yield from ((alias.name.split(".")[0], node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0], node.lineno
        yield from _imports(ast.iter_child_nodes(node))


def _declared() -> set[str]:
    """Distributions named in [project] dependencies (no extras, markers that hold here)."""
    names = set()
    for requirement in metadata.requires(DISTRIBUTION) or []:
        name, _, marker = requirement.partition(";")
        if "extra" in marker:
            continue
        names.add(_normalized(re.split(r"[\s\[<>=!~;(]", name.strip(), maxsplit=1)[0]))
    return names


def main() -> int:
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        print(f"runtime-imports: {PACKAGE} is not installed in {sys.prefix}", file=sys.stderr)
        return 1
    root = Path(next(iter(spec.submodule_search_locations)))
    try:
        declared = _declared()
    except metadata.PackageNotFoundError:
        print(f"runtime-imports: no installed {DISTRIBUTION} metadata in {sys.prefix}", file=sys.stderr)
        return 1
    providers = metadata.packages_distributions()
    problems = []
    for path in sorted(root.rglob("*.py")):
        for module, line in _imports([ast.parse(path.read_text(encoding="utf-8"), str(path))]):
            if module == PACKAGE or module in sys.stdlib_module_names or module == "__future__":
                continue
            where = f"{path.relative_to(root.parent)}:{line}"
            if importlib.util.find_spec(module) is None:
                problems.append(f"{where}: ModuleNotFoundError: No module named {module!r} "
                                "(a bare install lacks it: declare it in [project] dependencies)")
            elif not declared & {_normalized(d) for d in providers.get(module, [])}:
                provided = ", ".join(providers.get(module, [])) or "an undeclared distribution"
                problems.append(f"{where}: {module!r} comes from {provided}, which [project] dependencies "
                                "do not name (it is there only because another dependency brings it)")
    for problem in problems:
        print(f"runtime-imports: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
