"""The official MCP conformance suite's `server` scenarios against our fixture server, directly.

This is the baseline the through-Deputy run is compared with: a scenario that passes here
and fails through Deputy is something Deputy broke. It also checks the test-only
`BearerForwarder` by putting it between the suite and the fixture server (which ignores
the token) and requiring the same passed-set.

Needs Node 22 and the suite in ``.cache`` (``scripts/install-conformance.sh``); skipped
when absent, failed when absent under ``CI=true``.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.conformance.harness import (
    BearerForwarder,
    fixture_server,
    require_conformance,
    run_server_scenarios,
    run_server_scenarios_detailed,
    summarize,
)

pytestmark = pytest.mark.conformance

# 0.2.0-alpha.12 `--suite all` (65 scenarios): the scenarios our SDK-built fixture passes.
# Not passing, and not expected to: tasks-* (10, an extension the SDK server does not
# implement), input-required-result-* (9 of 14 fail: needs multi-round-trip tools),
# http-custom-header-server-validation (needs x-mcp-header tool annotations).
ALPHA_ALL_MUST_PASS = frozenset(
    {
        # the 31 scenarios of the alpha's default ("active") suite
        "server-initialize",
        "server-session-lifecycle",
        "logging-set-level",
        "ping",
        "completion-complete",
        "tools-list",
        "tools-call-simple-text",
        "tools-call-image",
        "tools-call-audio",
        "tools-call-embedded-resource",
        "tools-call-mixed-content",
        "tools-call-with-logging",
        "tools-call-error",
        "tools-call-with-progress",
        "tools-call-sampling",
        "tools-call-elicitation",
        "elicitation-sep1034-defaults",
        "server-sse-multiple-streams",
        "elicitation-sep1330-enums",
        "resources-list",
        "resources-read-text",
        "resources-read-binary",
        "resources-templates-read",
        "resources-subscribe",
        "resources-unsubscribe",
        "prompts-list",
        "prompts-get-simple",
        "prompts-get-with-args",
        "prompts-get-embedded-resource",
        "prompts-get-with-image",
        "dns-rebinding-protection",
        # pending / 2026-07-28 / extension scenarios that `--suite all` adds
        "server-stateless",
        "json-schema-2020-12",
        "server-sse-polling",
        "sep-2164-resource-not-found",
        "sep-2640-skills-directory",
        "sep-2640-skills-enumeration",
        "sep-2640-skills-manifest",
        "caching",
        "http-header-validation",
        "input-required-result-missing-input-response",
        "input-required-result-unsupported-methods",
        "input-required-result-ignore-extra-params",
        "input-required-result-validate-input",
    }
)
ALPHA_ALL_SCENARIOS = 65
STABLE_ACTIVE_SCENARIOS = 30


def test_alpha_all_suite_direct(tmp_path: Path) -> None:
    require_conformance("alpha")
    with fixture_server() as url:
        results = run_server_scenarios_detailed(url, tmp_path / "alpha", version="alpha", suite="all")
    passed = {name for name, result in results.items() if result.passed}
    assert len(results) == ALPHA_ALL_SCENARIOS, summarize(results)
    assert passed >= ALPHA_ALL_MUST_PASS, summarize(results)
    assert len(passed) >= len(ALPHA_ALL_MUST_PASS)


def test_stable_suite_direct(tmp_path: Path) -> None:
    require_conformance("stable")
    with fixture_server() as url:
        results = run_server_scenarios_detailed(url, tmp_path / "stable", version="stable", suite="active")
    assert len(results) == STABLE_ACTIVE_SCENARIOS, summarize(results)
    assert all(result.passed for result in results.values()), summarize(results)


def test_bearer_forwarder_preserves_results(tmp_path: Path) -> None:
    """Through the forwarder, the suite sees exactly what it sees directly (SSE included)."""
    require_conformance("alpha")
    with fixture_server() as url:
        direct = run_server_scenarios(url, tmp_path / "direct", suite="active")
        with BearerForwarder(url, "test-token") as forwarder:
            forwarded = run_server_scenarios(forwarder.url, tmp_path / "forwarded", suite="active")
            assert forwarder.requests, "the suite never went through the forwarder"
    assert forwarded == direct
    assert all(direct.values()), direct


def test_bearer_forwarder_adds_the_token() -> None:
    """The forwarder replaces any Authorization header with the bearer token (no suite needed)."""
    import threading

    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from tests.conformance.harness import free_port, wait_for_port

    async def echo(request: Request) -> JSONResponse:
        return JSONResponse({"authorization": request.headers.get("authorization"), "path": request.url.path})

    port = free_port()
    config = uvicorn.Config(Starlette(routes=[Route("/mcp/x", echo)]), port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for_port("127.0.0.1", port)
        with BearerForwarder(f"http://127.0.0.1:{port}/mcp/x", "s3cret") as forwarder:
            response = httpx.get(forwarder.url, headers={"Authorization": "Bearer other"})
        assert response.json() == {"authorization": "Bearer s3cret", "path": "/mcp/x"}
    finally:
        server.should_exit = True
        thread.join(10)
