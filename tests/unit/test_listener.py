"""The listener's connection guard and descriptor budget (deputy.listener), without sockets; and the header
deadline on a running loop, over a socket pair.

End to end, against a real ``deputy serve`` under attack: tests/security/test_connection_limits.py.
"""

from __future__ import annotations

import asyncio
import random
import resource
import socket
import time
from collections.abc import Iterator

import pytest
import uvicorn
import uvloop
from starlette.types import Receive, Scope, Send
from uvicorn.server import ServerState

from deputy.limits import LimitSettings
from deputy.listener import (
    MIN_CONNECTIONS,
    ConnectionGuard,
    ListenerBudget,
    guarded_http_protocol,
    listener_budget,
    raise_open_files_limit,
)


class Connection:
    def __init__(self, name: str) -> None:
        self.name = name
        self.was_cut = False

    def cut(self) -> None:
        self.was_cut = True

    def __repr__(self) -> str:
        return self.name


def _admitted(guard: ConnectionGuard, *names: str, address: str = "192.0.2.1") -> list[Connection]:
    connections = [Connection(name) for name in names]
    for connection in connections:
        guard.admit(connection, address)
    return connections


def test_past_the_limit_the_oldest_connection_without_a_request_is_cut() -> None:
    guard = ConnectionGuard(3)
    first, second, third = _admitted(guard, "first", "second", "third")
    guard.serving(first)
    (fourth,) = _admitted(guard, "fourth")
    assert (first.was_cut, second.was_cut, third.was_cut, fourth.was_cut) == (False, True, False, False)
    assert guard.open == 3


def test_an_idle_keep_alive_connection_goes_before_a_newcomer_but_after_every_silent_one() -> None:
    guard = ConnectionGuard(3)
    served, silent, busy = _admitted(guard, "served", "silent", "busy")
    guard.serving(served)
    guard.idle(served)
    guard.serving(busy)
    (newcomer,) = _admitted(guard, "newcomer")
    assert silent.was_cut and not served.was_cut
    guard.serving(newcomer)  # its request arrived: now only the idle keep-alive connection holds nothing
    (another,) = _admitted(guard, "another")
    assert served.was_cut and not newcomer.was_cut and not another.was_cut


def test_requests_in_flight_are_never_cut_for_room_the_newcomer_is() -> None:
    guard = ConnectionGuard(2)
    streams = _admitted(guard, "stream-1", "stream-2")
    for stream in streams:
        guard.serving(stream)
    (newcomer,) = _admitted(guard, "newcomer")
    assert newcomer.was_cut and not any(stream.was_cut for stream in streams)
    assert guard.open == 2


def test_a_cut_or_closed_connection_is_counted_once() -> None:
    guard = ConnectionGuard(2)
    a, b = _admitted(guard, "a", "b")
    guard.release(a)
    guard.release(a)  # connection_lost after a cut
    guard.serving(a)  # a late parser callback must not bring it back
    assert guard.open == 1
    guard.serving(b)
    guard.idle(b)
    assert guard.open == 1


def test_a_flood_from_one_address_cuts_its_own_connections_not_an_older_one_from_another() -> None:
    """The real client's connection, accepted amid a flood, keeps its place until its headers are read."""
    guard = ConnectionGuard(4)
    (client,) = _admitted(guard, "client", address="192.0.2.7")
    flood = _admitted(guard, *(f"attacker-{n}" for n in range(50)), address="198.51.100.9")
    assert not client.was_cut
    assert [c.was_cut for c in flood] == [True] * 47 + [False] * 3  # the flood's own oldest went, in order
    assert guard.open == 4


def test_the_address_holding_the_most_silent_connections_loses_its_oldest() -> None:
    guard = ConnectionGuard(5)
    a_first, a_second = _admitted(guard, "a-1", "a-2", address="192.0.2.1")
    b_first, b_second, b_third = _admitted(guard, "b-1", "b-2", "b-3", address="192.0.2.2")
    (newcomer,) = _admitted(guard, "c-1", address="192.0.2.3")
    assert b_first.was_cut and not any(c.was_cut for c in (a_first, a_second, b_second, b_third, newcomer))
    guard.serving(b_second)
    guard.serving(b_third)  # b now holds none waiting, a holds two: a's oldest is next
    (later,) = _admitted(guard, "d-1", address="192.0.2.4")
    assert a_first.was_cut and not later.was_cut


def test_when_every_address_holds_one_silent_connection_another_address_goes_not_the_newcomer() -> None:
    guard = ConnectionGuard(2)
    (first,) = _admitted(guard, "first", address="192.0.2.1")
    (second,) = _admitted(guard, "second", address="192.0.2.2")
    (newcomer,) = _admitted(guard, "newcomer", address="192.0.2.3")
    assert first.was_cut and not second.was_cut and not newcomer.was_cut


def test_the_choice_matches_a_plain_recount_through_any_sequence_of_events() -> None:
    """The guard's buckets against a recount from scratch, over random admits, requests and closes."""
    rng = random.Random(1)
    guard = ConnectionGuard(12)
    waiting: dict[Connection, str] = {}  # the model: what the guard should hold as waiting, in order
    for step in range(4000):
        event = rng.random()
        if event < 0.5 or not waiting:
            address = f"192.0.2.{rng.choice([1, 1, 1, 2, 2, 3, 4, 5])}"
            per_address = {a: [c for c, held_by in waiting.items() if held_by == a] for a in set(waiting.values())}
            most = max((len(held) for held in per_address.values()), default=0)
            open_before = guard.open
            connection = Connection(f"c{step}")
            guard.admit(connection, address)
            waiting[connection] = address
            if open_before == 12:
                cut = [c for c in waiting if c.was_cut]
                assert len(cut) == 1, step
                # The cut one was the oldest of an address holding the most (the newcomer counted too).
                per_address.setdefault(address, []).append(connection)
                most = max(len(held) for held in per_address.values())
                assert any(held[0] is cut[0] for held in per_address.values() if len(held) == most), step
                del waiting[cut[0]]
        else:
            connection = rng.choice(list(waiting))
            del waiting[connection]
            if event < 0.75:
                guard.serving(connection)
                guard.release(connection)
            else:
                guard.release(connection)
        assert guard.open == len(waiting)


def test_the_budget_keeps_room_for_the_backlog_and_other_descriptors() -> None:
    assert listener_budget(LimitSettings(max_connections=4096), 1_048_576).max_connections == 4096
    unbounded = LimitSettings(max_connections=1_000_000)
    for open_files in (256, 1024, 20_000):
        budget = listener_budget(unbounded, open_files, stdio_servers=1)
        assert budget.max_connections >= MIN_CONNECTIONS
        assert budget.max_connections == MIN_CONNECTIONS or budget.max_connections + budget.backlog < open_files
    assert listener_budget(unbounded, 1024).max_connections < listener_budget(unbounded, 20_000).max_connections
    with_stdio = listener_budget(unbounded, 20_000, stdio_servers=4)
    assert with_stdio.max_connections < listener_budget(unbounded, 20_000).max_connections


@pytest.fixture
def lowered_soft_limit() -> Iterator[int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowered = min(soft, 512)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowered, hard))
    try:
        yield lowered
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_soft_descriptor_limit_is_raised_to_the_hard_one(lowered_soft_limit: int) -> None:
    files = raise_open_files_limit()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert files.before == lowered_soft_limit
    assert files.now == soft
    if hard != resource.RLIM_INFINITY:
        assert soft == hard == files.hard


async def _ok(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


async def _answer_to_headers_sent_while_the_loop_was_busy() -> bytes:
    """Deputy's protocol on uvloop (as ``deputy serve`` runs it), header_timeout 0.5 s. While the loop handles
    another socket's data — after its poll returned — the request arrives and the loop stays busy past the
    deadline: the next loop turn runs its due timers before it polls again (libuv's order)."""
    loop = asyncio.get_running_loop()
    protocol = guarded_http_protocol(LimitSettings(header_timeout=0.5), ListenerBudget(64, 64))
    config = uvicorn.Config(_ok, http=protocol, lifespan="off", log_level="warning")
    config.load()
    state = ServerState()
    ours, client = socket.socketpair()
    busy_ours, busy_peer = socket.socketpair()

    class Busy(asyncio.Protocol):
        def data_received(self, data: bytes) -> None:
            client.sendall(b"GET / HTTP/1.1\r\nHost: deputy\r\n\r\n")  # in time, but after this poll
            time.sleep(1.0)  # a flood's accept storm, say: the loop is held past the deadline

    with client, busy_peer:
        await loop.connect_accepted_socket(lambda: protocol(config=config, server_state=state, app_state={}), ours)
        await loop.connect_accepted_socket(Busy, busy_ours)
        busy_peer.sendall(b"x")
        client.setblocking(False)
        answer = b""
        for _ in range(500):
            await asyncio.sleep(0.01)
            try:
                chunk = client.recv(4096)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                return answer + b"<reset>"
            answer += chunk
            if not chunk or answer.endswith(b"ok"):
                break
        return answer


def test_headers_that_arrived_in_time_are_read_before_the_deadline_is_judged() -> None:
    """Before, the due timer closed the connection with its request unread in the buffer: a client that spoke in
    time was cut because Deputy ran late (a CI flake under a connection flood)."""
    assert uvloop.run(_answer_to_headers_sent_while_the_loop_was_busy()).startswith(b"HTTP/1.1 200 ")
