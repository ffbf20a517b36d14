"""An upstream Deputy cannot reach: the client gets 502 and a JSON-RPC error that answers its own request."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.databases import database_url
from tests.support.deputy_process import RunningDeputy, running_deputy
from tests.support.oauth_flow import mcp_post, tokens_for_alice
from tests.support.sdk_client import free_port

SERVER = "gone"


@pytest.fixture(scope="module", params=["sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def gone(backend: str, upstream_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDeputy]:
    """A Deputy with a server at a loopback port nothing listens on."""
    directory = tmp_path_factory.mktemp(f"deputy-gone-{backend}")
    extra = f'\n[servers.{SERVER}]\nurl = "http://127.0.0.1:{free_port()}/mcp"\nscopes = ["{SERVER}:tools"]\n'
    with database_url(backend, directory) as url, running_deputy(directory, url, upstream_url, extra) as deputy:
        yield deputy


@pytest.mark.parametrize("request_id", [41, "call-41"])
async def test_an_unreachable_upstream_is_a_502_for_the_request_id(gone: RunningDeputy,
                                                                   request_id: int | str) -> None:
    """Issue 11 finding 8: the 502 carries the id of the request it answers, not null."""
    token, _ = await tokens_for_alice(gone, gone.resource(SERVER))
    call = {"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
            "params": {"name": "echo", "arguments": {"text": "hello"}}}
    response = await mcp_post(gone, token, server=SERVER, body=call)
    assert response.status_code == 502, response.text
    answer = response.json()
    assert answer["id"] == request_id
    assert answer["error"]["code"] == -32603
    assert answer["error"]["message"] == "upstream server unreachable"
