"""The ``/metrics`` listener (issue 13): only ``GET /metrics``, never the public port, a clear failure to bind.

Abuse first: every other path and method is refused, an address that is taken stops start-up with one line naming
``metrics.listen``, and a configuration that puts metrics on the public listener's port is refused. Then what a
scrape shows: the library's own parser reads it, gzip when asked, no ``_created`` series, and a count the
database cannot give is NaN without the scrape waiting for it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from deputy.oauth.token import GRANT_LABELS, GRANTS
from deputy.telemetry.metrics import CachedCount, Metrics
from deputy.telemetry.metrics_listener import MetricsListener, MetricsListenerError
from tests.support.config_files import config_error, load

OTHER_PATHS = ("/", "/metrics/", "/metricsx", "/healthz", "/readyz", "/token", "/.well-known/jwks.json",
               "/mcp/demo", "/favicon.ico", "//metrics", "/Metrics")


@pytest.fixture
async def listener() -> AsyncIterator[MetricsListener]:
    metrics = Metrics()
    metrics.tokens_issued.labels("client_credentials").inc()
    served = MetricsListener(metrics, "127.0.0.1", 0)
    await served.start()
    try:
        yield served
    finally:
        await served.stop()


def _url(listener: MetricsListener, path: str = "/metrics") -> str:
    assert listener.address is not None
    host, port = listener.address
    return f"http://{host}:{port}{path}"


# Abuse: nothing else is served.


@pytest.mark.parametrize("path", OTHER_PATHS)
async def test_any_other_path_is_not_found(listener: MetricsListener, path: str) -> None:
    async with httpx.AsyncClient() as http:
        answer = await http.get(_url(listener, path))
    assert answer.status_code == 404
    assert "deputy_" not in answer.text


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "TRACE"])
async def test_any_other_method_is_not_allowed(listener: MetricsListener, method: str) -> None:
    async with httpx.AsyncClient() as http:
        answer = await http.request(method, _url(listener), content=b"x=1")
    assert answer.status_code == 405
    assert answer.headers["allow"] == "GET"
    assert "deputy_" not in answer.text


async def test_an_address_in_use_stops_start_up_with_one_line_naming_the_setting() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        second = MetricsListener(Metrics(), "127.0.0.1", port)
        with pytest.raises(MetricsListenerError) as info:
            await second.start()
    message = str(info.value)
    assert message.startswith(f"metrics.listen 127.0.0.1:{port}: cannot listen")
    assert "in use" in message and "\n" not in message


async def test_an_address_not_of_this_host_stops_start_up() -> None:
    # 192.0.2.0/24 is TEST-NET-1 (RFC 5737): never assigned to this host's interfaces.
    with pytest.raises(MetricsListenerError, match=r"^metrics\.listen 192\.0\.2\.1:9464: cannot listen"):
        await MetricsListener(Metrics(), "192.0.2.1", 9464).start()


async def test_stopped_means_the_port_is_closed() -> None:
    served = MetricsListener(Metrics(), "127.0.0.1", 0)
    await served.start()
    url = _url(served)
    await served.stop()
    async with httpx.AsyncClient() as http:
        with pytest.raises(httpx.ConnectError):
            await http.get(url)


def test_the_listener_does_not_repeat_the_public_servers_lifecycle_lines(
        caplog: pytest.LogCaptureFixture) -> None:
    async def start_and_stop() -> None:
        served = MetricsListener(Metrics(), "127.0.0.1", 0)
        await served.start()
        await served.stop()

    with caplog.at_level(logging.INFO, logger="uvicorn.error"):
        asyncio.run(start_and_stop())
        logging.getLogger("uvicorn.error").info("Started server process [1]")  # the public server's own
    lines = [r.getMessage() for r in caplog.records if r.name == "uvicorn.error"]
    assert lines == ["Started server process [1]"]


# Abuse: never on the public port (a configuration error at load).


@pytest.mark.parametrize(("public", "listen"), [
    ('host = "127.0.0.1"\nport = 8000', "127.0.0.1:8000"),
    ('host = "0.0.0.0"\nport = 8000', "127.0.0.1:8000"),
    ('host = "127.0.0.1"\nport = 8000', "0.0.0.0:8000"),
    ('host = "localhost"\nport = 8000', "127.0.0.1:8000"),
    ('host = "::"\nport = 8000', "[::1]:8000"),
    ("port = 8000", "127.0.0.1:8000"),  # the default host
])
def test_metrics_on_the_public_listener_is_refused(tmp_path: Path, public: str, listen: str) -> None:
    error = config_error(tmp_path, _config(tmp_path, public, listen))
    assert error.key == "metrics.listen"
    assert "public listener" in str(error)


@pytest.mark.parametrize(("public", "listen"), [
    ('host = "127.0.0.1"\nport = 8000', "127.0.0.1:9464"),
    ('host = "127.0.0.1"\nport = 0', "127.0.0.1:0"),  # two free ports, never the same one
    ('host = "10.0.0.1"\nport = 8000', "127.0.0.1:8000"),  # another interface
])
def test_metrics_apart_from_the_public_listener_loads(tmp_path: Path, public: str, listen: str) -> None:
    settings = load(tmp_path, _config(tmp_path, public, listen))
    host, _, port = listen.rpartition(":")
    assert settings.telemetry.metrics_listen == (host, int(port))


def _config(directory: Path, public: str, listen: str) -> str:
    return (f'public_url = "https://deputy.example.com"\ndata_dir = "{directory / "data"}"\n{public}\n\n'
            f'[servers.demo]\nurl = "http://127.0.0.1:9/mcp"\nscopes = ["demo:tools"]\n\n'
            f'[metrics]\nlisten = "{listen}"\n')


def test_every_grant_the_token_endpoint_serves_has_its_label() -> None:
    # A grant served without a label would fail its count (and its answer) after the token was minted.
    assert GRANT_LABELS.keys() == GRANTS.keys()
    assert len(set(GRANT_LABELS.values())) == len(GRANT_LABELS)


# What a scrape shows.


async def test_the_scrape_parses_with_the_library_and_has_no_created_series(listener: MetricsListener) -> None:
    async with httpx.AsyncClient() as http:
        answer = await http.get(_url(listener), headers={"Accept-Encoding": "identity"})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    families = {family.name: family for family in text_string_to_metric_families(answer.text)}
    issued = families["deputy_tokens_issued"]
    assert [(s.name, s.labels, s.value) for s in issued.samples] == [
        ("deputy_tokens_issued_total", {"grant_type": "client_credentials"}, 1.0)]
    assert "_created" not in answer.text


async def test_the_scrape_is_gzipped_when_asked(listener: MetricsListener) -> None:
    async with httpx.AsyncClient() as http:
        raw = await http.get(_url(listener), headers={"Accept-Encoding": "gzip"})
    assert raw.headers["content-encoding"] == "gzip"
    assert "deputy_tokens_issued_total" in raw.text  # httpx decompressed it


async def test_a_restricted_scrape_has_no_created_series(listener: MetricsListener) -> None:
    async with httpx.AsyncClient() as http:
        answer = await http.get(_url(listener), params={"name[]": ["deputy_tokens_issued_total",
                                                                    "deputy_tokens_issued_created"]})
    assert "deputy_tokens_issued_total" in answer.text
    assert "_created" not in answer.text and "deputy_requests" not in answer.text


async def test_openmetrics_is_served_when_asked(listener: MetricsListener) -> None:
    async with httpx.AsyncClient() as http:
        answer = await http.get(_url(listener), headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    assert answer.headers["content-type"].startswith("application/openmetrics-text")
    assert answer.text.endswith("# EOF\n")
    assert "_created" not in answer.text


# A count read from the database: never waited for, NaN when unknown.


async def test_a_count_is_read_once_and_kept() -> None:
    reads = 0

    async def read() -> int:
        nonlocal reads
        reads += 1
        return 3

    count = CachedCount(read, max_age=3600)
    await count.refresh()
    for _ in range(5):
        count.poke()  # a scrape begins: not due for another hour
        assert count.value() == 3.0
    assert reads == 1


async def test_a_dead_database_shows_nan_and_is_not_asked_on_every_scrape() -> None:
    reads = 0

    async def read() -> int:
        nonlocal reads
        reads += 1
        raise OSError("connection refused")

    count = CachedCount(read, max_age=3600)
    await count.refresh()
    assert math.isnan(count.value())
    for _ in range(5):
        count.poke()
        assert math.isnan(count.value())
    assert reads == 1


async def test_a_count_due_is_read_again_when_a_scrape_begins() -> None:
    answers = iter([1, 2])

    async def read() -> int:
        return next(answers)

    count = CachedCount(read, max_age=0)
    await count.refresh()
    assert count.value() == 1
    count.poke()  # starts the read and returns at once, the count still the last one
    assert count.value() == 1
    reads = [task for task in asyncio.all_tasks() if task.get_name() == "deputy-metrics-count"]
    assert len(reads) == 1
    await reads[0]
    assert count.value() == 2


async def test_a_hanging_database_never_holds_the_scrape() -> None:
    never = asyncio.Event()
    started = asyncio.Event()

    async def read() -> int:
        started.set()
        await never.wait()
        return 1

    metrics = Metrics()
    metrics.count_at_scrape(metrics.approvals_pending, read)
    served = MetricsListener(metrics, "127.0.0.1", 0)
    await served.start()
    try:
        async with httpx.AsyncClient() as http:
            first = await http.get(_url(served))  # answered while the read it started still hangs
            await started.wait()
            second = await http.get(_url(served))
    finally:
        await metrics.close()
        await served.stop()
    for answer in (first, second):
        pending = _value(answer.text, "deputy_approvals_pending")
        assert math.isnan(pending)


async def test_a_count_that_times_out_is_nan() -> None:
    async def read() -> int:
        await asyncio.Event().wait()
        return 1

    count = CachedCount(read, timeout=0.01)
    await count.refresh()
    assert math.isnan(count.value())


def test_rendering_the_registry_never_reads_the_database() -> None:
    # Rendered in a worker thread, with no event loop: the gauge shows the count it has.
    metrics = Metrics()

    async def read() -> int:
        raise AssertionError("read while rendering")

    metrics.count_at_scrape(metrics.approvals_pending, read)
    pending = metrics.registry.get_sample_value("deputy_approvals_pending")
    assert pending is not None and math.isnan(pending)


def _value(text: str, name: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(f"{name} not in the scrape")
