"""Per-address limits with ``workers = N`` (deputy.limits.worker_share): each worker counts only the requests it
serves, in memory (deputy.rate_limit), so each admits its share and the whole Deputy about the configured limit —
N workers must not admit N times as many registrations, failed sign-ins, federated sign-ins or pending
authorization requests."""

from __future__ import annotations

from pathlib import Path

import pytest
from starlette.routing import Route

from deputy.app import create_app
from deputy.config import Settings, load_settings
from deputy.limits import worker_share
from deputy.oauth.authorize import AuthorizationEndpoint
from deputy.rate_limit import SlidingWindowLimiter
from deputy.services import Services
from deputy.web.connection_pages import STARTS_PER_MINUTE, ConnectionPages
from deputy.web.federated_pages import FederatedPages
from deputy.web.sign_in import FREE_FAILED_SIGN_INS, SignIn

CONFIG = '''
public_url = "http://127.0.0.1:8000"
[registration]
rate_limit_per_minute = 10
[limits]
signin_failures_per_minute = 10
signin_starts_per_minute = 7
authorization_requests_per_minute = 9
[servers.demo]
url = "http://127.0.0.1:8001/mcp"
scopes = ["demo:tools"]
'''


def _settings(tmp_path: Path, workers: int) -> Settings:
    path = tmp_path / "deputy.toml"
    path.write_text(f"workers = {workers}\n" + CONFIG)
    return load_settings(path, environ={"DEPUTY_DATA_DIR": str(tmp_path / "data")})


@pytest.mark.parametrize(("limit", "workers", "share"), [
    (10, 1, 10), (10, 2, 5), (10, 3, 4), (5, 2, 3), (1, 4, 1), (30, 64, 1),
])
def test_each_worker_admits_its_share_rounded_up_and_at_least_one(limit: int, workers: int, share: int) -> None:
    assert worker_share(limit, workers) == share


def _admitted(limiter: SlidingWindowLimiter, address: str = "192.0.2.7") -> int:
    admitted = 0
    while limiter.admit(address) is None:
        admitted += 1
        assert admitted <= 100, "the limiter never refuses"
    return admitted


def _registration_limiter(settings: Settings) -> SlidingWindowLimiter:
    routes = create_app(settings).routes
    while not hasattr(routes, "routes"):  # through the CORS and body-limit wrappers to the Starlette app
        routes = routes.app  # type: ignore[attr-defined]
    register = next(r for r in routes.routes if isinstance(r, Route) and r.path == "/register")
    return register.endpoint.__self__.limiter  # type: ignore[attr-defined,no-any-return]


@pytest.mark.parametrize(("workers", "registrations"), [(1, 10), (2, 5)])
def test_registrations_per_address_are_shared_between_workers(tmp_path: Path, workers: int,
                                                               registrations: int) -> None:
    assert _admitted(_registration_limiter(_settings(tmp_path, workers))) == registrations


def test_the_sign_in_limits_are_shared_between_workers(tmp_path: Path) -> None:
    services = Services.open(_settings(tmp_path, 2))
    sign_in = SignIn(services)
    assert sign_in.failed_logins.free == worker_share(FREE_FAILED_SIGN_INS, 2) == 3
    federated = FederatedPages(services, sign_in)
    assert _admitted(federated.failures) == 5
    assert _admitted(federated.starts) == 4
    assert _admitted(ConnectionPages(services, sign_in).starts) == worker_share(STARTS_PER_MINUTE, 2)
    assert _admitted(AuthorizationEndpoint(services, sign_in, federated).pending_requests) == 5


def test_one_worker_keeps_the_configured_limits(tmp_path: Path) -> None:
    services = Services.open(_settings(tmp_path, 1))
    sign_in = SignIn(services)
    assert sign_in.failed_logins.free == FREE_FAILED_SIGN_INS
    assert _admitted(FederatedPages(services, sign_in).failures) == 10
    assert _admitted(AuthorizationEndpoint(services, sign_in).pending_requests) == 9
