"""README's "## Layout" names what exists, and all of it (issue 17, item 9).

The layout block lists, after each root (``deputy/``, ``tests/``, ``bench/``, ``scripts/``), the paths
under it: a token ending in ``.py``, ``.sh`` or ``/`` is a path; any other text (the parenthesised
glosses) is prose. Checked both ways:

- every listed path exists (a renamed or removed module leaves no stale name);
- every module and subpackage at the root of ``deputy/``, every folder of ``tests/`` and every file of
  ``scripts/`` is listed (a new one cannot land unmentioned). Inside a subpackage only the listed
  paths are checked, so its files can move without touching the README.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ROOTS = ("deputy/", "tests/", "bench/", "scripts/")
# A path token: ends in .py, .sh or "/" and is not the start of a longer word ("and/or" is prose).
PATH_TOKEN = re.compile(r"(?<![\w./-])([\w-][\w.-]*(?:/[\w.-]+)*(?:\.py|\.sh|/))(?![\w/.-])")


def layout_block(readme: str) -> str:
    """The fenced block of the "## Layout" section."""
    section = re.search(r"^## Layout\n(.*?)(?=^## |\Z)", readme, re.MULTILINE | re.DOTALL)
    assert section, 'README has no "## Layout" section'
    block = re.search(r"^```[^\n]*\n(.*?)^```", section.group(1), re.MULTILINE | re.DOTALL)
    assert block, 'README\'s "## Layout" section has no fenced block'
    return block.group(1)


def layout_entries(readme: str) -> dict[str, list[str]]:
    """Each root (an unindented line's first token) and the path tokens after it, in order."""
    entries: dict[str, list[str]] = {}
    root = None
    for line in layout_block(readme).splitlines():
        if not line.strip():
            continue
        if not line[0].isspace():
            root, _, line = line.partition(" ")
            assert root.endswith("/"), f"a layout line starts with a folder, not {root!r}"
            entries.setdefault(root, [])
        assert root is not None, "the layout block starts with an indented line"
        entries[root].extend(PATH_TOKEN.findall(line))
    return entries


def _top_of_package(package: Path) -> set[str]:
    modules = {p.name for p in package.glob("*.py") if not p.name.startswith("__")}
    subpackages = {f"{p.name}/" for p in package.iterdir() if (p / "__init__.py").is_file()}
    return modules | subpackages


def _test_folders(tests: Path) -> set[str]:
    return {f"{p.name}/" for p in tests.iterdir() if p.is_dir() and any(p.glob("*.py"))}


def _files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.is_file()}


def layout_problems(repo: Path, readme: str) -> list[str]:
    """What the layout gets wrong about ``repo``: stale paths, then unlisted ones."""
    entries = layout_entries(readme)
    problems = [f"the layout has no {root} line" for root in ROOTS if root not in entries]
    for root, paths in entries.items():
        if not (repo / root).is_dir():
            problems.append(f"{root} is listed but is not a folder")
        for path in paths:
            where = repo / root / path
            if not (where.is_dir() if path.endswith("/") else where.is_file()):
                problems.append(f"{root}{path} is listed but does not exist")
    complete = {
        "deputy/": _top_of_package(repo / "deputy"),
        "tests/": _test_folders(repo / "tests"),
        "scripts/": _files(repo / "scripts") if (repo / "scripts").is_dir() else set(),
    }
    for root, present in complete.items():
        if root not in entries:
            continue  # said above
        # A listed subpackage path (audit/verify/) counts for its top (audit/).
        listed = {path.split("/")[0] + "/" if "/" in path else path for path in entries.get(root, [])}
        problems += [f"{root}{name} exists but the layout does not list it" for name in sorted(present - listed)]
    return problems


def test_the_readme_layout_lists_what_exists_and_nothing_else() -> None:
    """Issue 17: the Layout left out most root modules of ``deputy/`` (act_chain.py, hashing.py, secrets.py,
    starter.py, …) and the scripts."""
    problems = layout_problems(REPO, (REPO / "README.md").read_text(encoding="utf-8"))
    assert problems == [], "README.md, ## Layout:\n" + "\n".join(problems)


# The checker itself, on a small tree: it must see each kind of drift.

LAYOUT = """# Project

## Layout

```
deputy/  app.py (the application)  audit/ (log, proofs)  audit/verify/  and/or prose
tests/   unit/
bench/   benchmarks
scripts/ check.sh
```

## Next
"""


def _tree(tmp_path: Path) -> Path:
    for folder in ("deputy/audit/verify", "tests/unit", "bench", "scripts"):
        (tmp_path / folder).mkdir(parents=True)
    for file in ("deputy/__init__.py", "deputy/app.py", "deputy/audit/__init__.py",
                 "deputy/audit/verify/__init__.py", "tests/unit/test_x.py", "scripts/check.sh"):
        (tmp_path / file).write_text("")
    return tmp_path


def test_the_checker_accepts_a_matching_layout(tmp_path: Path) -> None:
    assert layout_entries(LAYOUT)["deputy/"] == ["app.py", "audit/", "audit/verify/"]
    assert layout_problems(_tree(tmp_path), LAYOUT) == []


def test_a_new_root_module_missing_from_the_layout_is_named(tmp_path: Path) -> None:
    repo = _tree(tmp_path)
    (repo / "deputy" / "clock.py").write_text("")
    assert layout_problems(repo, LAYOUT) == ["deputy/clock.py exists but the layout does not list it"]


def test_a_module_turned_package_is_named_both_ways(tmp_path: Path) -> None:
    repo = _tree(tmp_path)
    (repo / "deputy" / "app.py").unlink()
    (repo / "deputy" / "app").mkdir()
    (repo / "deputy" / "app" / "__init__.py").write_text("")
    assert layout_problems(repo, LAYOUT) == ["deputy/app.py is listed but does not exist",
                                            "deputy/app/ exists but the layout does not list it"]


def test_new_test_folders_and_scripts_are_named(tmp_path: Path) -> None:
    repo = _tree(tmp_path)
    (repo / "tests" / "fault").mkdir()
    (repo / "tests" / "fault" / "test_y.py").write_text("")
    (repo / "scripts" / "other.sh").write_text("")
    assert layout_problems(repo, LAYOUT) == ["tests/fault/ exists but the layout does not list it",
                                            "scripts/other.sh exists but the layout does not list it"]


def test_a_missing_root_line_is_named(tmp_path: Path) -> None:
    layout = LAYOUT.replace("scripts/ check.sh\n", "")
    assert layout_problems(_tree(tmp_path), layout) == ["the layout has no scripts/ line"]
