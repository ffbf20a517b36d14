"""`examples/sdk_client.py`, run as a user runs it, against `deputy demo` run as `make demo` runs it.

Both are real processes: the example signs in through Deputy's own sign-in and consent pages
(its no-browser mode), and the README shows its core word for word.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.browser import CHROMIUM, CHROMIUM_FLAGS
from tests.support.databases import require
from tests.support.deputy_process import _wait_http
from tests.support.sdk_client import free_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "sdk_client.py"
PASSWORD = "example-client-password"
ADDED = "add(2, 3) -> {'result': 5}"


def _without_deputy_settings() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("DEPUTY_")}


@dataclass(frozen=True)
class Demo:
    url: str
    banner: Path


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """`deputy demo` on free ports, with alice's password set the way the README says (DEPUTY_DEMO_PASSWORD)."""
    directory = tmp_path_factory.mktemp("demo")
    port = free_port()
    env = _without_deputy_settings() | {"DEPUTY_PORT": str(port), "DEPUTY_DATA_DIR": str(directory / "data"),
                                        "DEPUTY_DEMO_PASSWORD": PASSWORD}
    log = directory / "demo.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "deputy", "demo", "--upstream-port", str(free_port())],
                                   env=env, stdout=out, stderr=subprocess.STDOUT, cwd=directory)
    try:
        _wait_http(f"http://127.0.0.1:{port}/healthz", process, "deputy demo")
        yield Demo(f"http://127.0.0.1:{port}/mcp/demo", log)
    finally:
        process.terminate()
        process.wait(15)


def _run_example(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(EXAMPLE), *args], env=env or _without_deputy_settings(),
                          capture_output=True, text=True, timeout=120, check=False)


def test_the_example_signs_in_without_a_browser_and_calls_add(demo: Demo) -> None:
    """The password from DEPUTY_DEMO_PASSWORD, as `make demo` users have it: no flag needed."""
    run = _run_example(demo.url, env=_without_deputy_settings() | {"DEPUTY_DEMO_PASSWORD": PASSWORD})
    assert run.returncode == 0, run.stderr
    assert ADDED in run.stdout.splitlines(), run.stdout
    assert "delete_user" in run.stdout, "the tool list, before the call"


def test_the_demo_banner_command_runs_as_printed(demo: Demo) -> None:
    """The no-browser line `deputy demo` prints, run from the source tree as printed (this interpreter for .venv's)."""
    line = next(line for line in demo.banner.read_text().splitlines() if "examples/sdk_client.py" in line
                and "--password" in line)
    command = shlex.split(line.partition("#")[0])
    assert command[:2] == [".venv/bin/python", "examples/sdk_client.py"], line
    run = subprocess.run([sys.executable, *command[1:]], cwd=ROOT, env=_without_deputy_settings(),
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    assert ADDED in run.stdout.splitlines()


@pytest.mark.browser
async def test_by_default_a_person_signs_in_in_the_browser(demo: Demo) -> None:
    """Without a password the example hands the sign-in to a browser (here Chromium, driven as a person would
    use it) and waits at its loopback listener for the redirect."""
    require("Debian's chromium (apt-get install chromium)", shutil.which("chromium") is not None)
    from playwright.async_api import async_playwright

    # webbrowser runs $BROWSER with the URL; `true` opens nothing, and the example prints the URL to visit.
    example = await asyncio.create_subprocess_exec(
        sys.executable, str(EXAMPLE), demo.url, env=_without_deputy_settings() | {"BROWSER": "true"},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert example.stderr is not None
        printed = [(await example.stderr.readline()).decode() for _ in range(2)]
        assert "visit:" in printed[0], printed
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            page = await browser.new_page()
            await page.goto(printed[1].strip())
            await page.fill("#username", "alice")
            await page.fill("#password", PASSWORD)
            await page.click("button[type=submit]")
            await page.click("button[value=approve]")
            await page.wait_for_selector("text=you can close this window")
            await browser.close()
        stdout, stderr = await asyncio.wait_for(example.communicate(), timeout=120)
    finally:
        if example.returncode is None:
            example.kill()
            await example.wait()
    assert example.returncode == 0, stderr
    assert ADDED in stdout.decode().splitlines()


def test_a_wrong_password_exits_with_the_reason_and_gets_no_token(demo: Demo, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.json"
    run = _run_example(demo.url, "--password", "not-" + PASSWORD, "--token-file", str(tokens))
    assert run.returncode == 1
    # One line, Deputy's reason from its sign-in page; no traceback.
    assert re.fullmatch(r"sign-in failed: \S.*", run.stderr.strip()), run.stderr
    assert ADDED not in run.stdout
    assert json.loads(tokens.read_text())["tokens"] is None, "registered, but never given a token"


def test_no_server_is_one_line_saying_so() -> None:
    run = _run_example(f"http://127.0.0.1:{free_port()}/mcp/demo", "--password", PASSWORD)
    assert run.returncode == 1
    assert re.fullmatch(r"cannot connect to \S+: is `make demo` running\?", run.stderr.strip()), run.stderr


def test_a_token_file_lets_the_next_run_call_without_signing_in(demo: Demo, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.json"
    first = _run_example(demo.url, "--password", PASSWORD, "--token-file", str(tokens))
    assert first.returncode == 0, first.stderr
    assert oct(tokens.stat().st_mode & 0o777) == "0o600", "a refresh token is readable by its owner only"
    # A wrong password would fail any sign-in: this run succeeds only on the stored token.
    second = _run_example(demo.url, "--password", "not-" + PASSWORD, "--token-file", str(tokens))
    assert second.returncode == 0, second.stderr
    assert ADDED in second.stdout.splitlines()


def test_the_readme_shows_the_example_word_for_word() -> None:
    source = EXAMPLE.read_text()
    core = source.split("# README: begin\n", 1)[1].split("# README: end\n", 1)[0]
    section = (ROOT / "README.md").read_text().split("## Connect a client\n", 1)[1].split("\n## ", 1)[0]
    shown = re.findall(r"```python\n(.*?)```", section, re.DOTALL)
    assert shown == [core]
