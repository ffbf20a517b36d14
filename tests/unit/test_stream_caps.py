"""GET stream caps and upstream pool places (deputy.gateway.stream_caps, UpstreamPool.admit), and their settings.

The end-to-end cases (429, 503, calls passing while streams fill their pool, every release path) are in
tests/e2e/test_event_stream_caps.py; these cover what a process cannot show cheaply.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from starlette.types import Message

from deputy.config_values import ConfigError
from deputy.gateway.principal import Principal
from deputy.gateway.responses import CLIENT_LEFT
from deputy.gateway.stream_caps import CallCaps, CapReached, Slots, StreamCaps, StreamHold
from deputy.gateway.upstream_pool import UpstreamPool
from deputy.limits import limit_settings


class Client:
    """An ASGI ``receive`` for a request whose body has been read: ``http.disconnect`` once ``leave`` is called."""

    def __init__(self) -> None:
        self.gone = asyncio.Event()
        self.asked = 0

    def leave(self) -> None:
        self.gone.set()

    async def receive(self) -> Message:
        self.asked += 1
        await self.gone.wait()
        return {"type": "http.disconnect"}


STILL_HERE = Client().receive


def principal(user: str, agent: str = "client", server: str = "demo") -> Principal:
    return Principal(user=user, agent=agent, scopes=frozenset(), token_id="t", server=server)


def test_a_principal_past_its_cap_is_refused_and_others_are_not() -> None:
    caps = StreamCaps(per_user=8, per_principal=2, per_session=2)
    held = [caps.take(principal("alice"), None) for _ in range(2)]
    assert all(isinstance(hold, StreamHold) for hold in held)
    assert caps.take(principal("alice"), None) == CapReached("limits.streams_per_principal", 2, 429)
    # Another user, client or server is another principal.
    for other in (principal("bob"), principal("alice", agent="other"), principal("alice", server="other")):
        assert isinstance(caps.take(other, None), StreamHold)


def test_one_user_with_many_clients_holds_at_most_her_share() -> None:
    """Each client of hers is a principal of its own: without a cap per user, one person registering client after
    client could hold every place in the stream pool."""
    caps = StreamCaps(per_user=3, per_principal=2, per_session=2)
    held = [caps.take(principal("alice", agent=f"client-{n}"), None) for n in range(3)]
    assert all(isinstance(hold, StreamHold) for hold in held)
    assert caps.take(principal("alice", agent="client-3"), None) == CapReached("limits.streams_per_user", 3, 429)
    assert isinstance(caps.take(principal("bob"), None), StreamHold)  # another user has her own share
    assert isinstance(caps.take(principal("alice", server="other"), None), StreamHold)  # and so has another server
    held[0].release()  # type: ignore[union-attr]
    assert isinstance(caps.take(principal("alice", agent="client-3"), None), StreamHold)
    assert not caps._by_user.keys() - {("demo", "alice"), ("demo", "bob"), ("other", "alice")}


def test_a_session_past_its_cap_is_refused() -> None:
    caps = StreamCaps(per_user=8, per_principal=8, per_session=1)
    assert isinstance(caps.take(principal("alice"), "s1"), StreamHold)
    assert caps.take(principal("alice"), "s1") == CapReached("limits.streams_per_session", 1, 429)
    assert isinstance(caps.take(principal("alice"), "s2"), StreamHold)


def test_releasing_gives_places_back_once_and_leaves_nothing_behind() -> None:
    caps = StreamCaps(per_user=1, per_principal=1, per_session=1)
    hold = caps.take(principal("alice"), "s1")
    assert isinstance(hold, StreamHold)
    hold.release()
    hold.release()  # a second release (two paths ending one stream) gives nothing more back
    assert caps.open_streams() == 0
    # no entry kept for a user, principal or session that has gone
    assert not caps._by_user and not caps._by_principal and not caps._by_session
    again = caps.take(principal("alice"), "s1")
    assert isinstance(again, StreamHold)
    assert caps.take(principal("alice"), "s1") == CapReached("limits.streams_per_principal", 1, 429)


async def test_a_full_slot_pool_refuses_at_once_or_after_a_bounded_wait() -> None:
    slots = Slots(1)
    assert await slots.take(None)
    assert not await slots.take(None)  # a stream: not at all
    assert not await slots.take(asyncio.get_running_loop().time() + 0.05)  # a call: until its deadline
    slots.give_back()
    assert await slots.take(None)


async def test_a_call_waits_for_a_place_given_back_in_time() -> None:
    slots = Slots(1)
    assert await slots.take(None)
    waiting = asyncio.create_task(slots.take(asyncio.get_running_loop().time() + 30))
    await asyncio.sleep(0)
    slots.give_back()
    assert await asyncio.wait_for(waiting, 30)


async def test_streams_never_take_a_calls_place_and_one_server_not_all_of_them() -> None:
    """The benchmark's finding: streams filling their pool leave the calls' pool whole; and one server's calls
    take at most its own share."""
    pool = UpstreamPool(streams=2, calls=4, call_wait=0.05)
    server, other = Slots(2), Slots(2)
    streams = [await pool.admit(server, stream=True, receive=STILL_HERE) for _ in range(2)]
    assert all(streams) and await pool.admit(server, stream=True, receive=STILL_HERE) is None
    calls = [await pool.admit(server, stream=False, receive=STILL_HERE) for _ in range(2)]
    assert all(calls)
    assert await pool.admit(server, stream=False, receive=STILL_HERE) is None  # this server's share is taken
    assert await pool.admit(other, stream=False, receive=STILL_HERE) is not None  # the others' is not
    for give_back in (*streams, *calls):
        assert callable(give_back)
        give_back()
    assert await pool.admit(server, stream=True, receive=STILL_HERE) is not None
    assert await pool.admit(server, stream=False, receive=STILL_HERE) is not None


async def test_a_call_cancelled_while_waiting_gives_its_server_place_back() -> None:
    pool = UpstreamPool(streams=1, calls=1, call_wait=30)
    server = Slots(2)
    first = await pool.admit(server, stream=False, receive=STILL_HERE)
    assert callable(first)
    # It has the server's place and waits for the pool's.
    waiting = asyncio.create_task(pool.admit(server, stream=False, receive=STILL_HERE))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    first()
    assert [await server.take(None), await server.take(None)] == [True, True]  # both places are free


async def _second_call_waiting() -> tuple[UpstreamPool, Slots, Callable[[], None], Client, asyncio.Task[object]]:
    """A pool with one call place, held; a second call of the same server waiting for it, watching its client."""
    pool = UpstreamPool(streams=1, calls=1, call_wait=30)
    server = Slots(2)
    first = await pool.admit(server, stream=False, receive=STILL_HERE)
    assert callable(first)
    client = Client()
    waiting: asyncio.Task[object] = asyncio.create_task(pool.admit(server, stream=False, receive=client.receive))
    await asyncio.sleep(0.01)
    return pool, server, first, client, waiting


async def test_a_call_whose_client_leaves_while_it_waits_is_never_given_a_place() -> None:
    """Sent later, it would run the tool for nobody, and again when the client retries."""
    pool, server, first, client, waiting = await _second_call_waiting()
    assert not waiting.done() and client.asked == 1  # waiting, and watching its client
    client.leave()
    assert await asyncio.wait_for(waiting, 30) is CLIENT_LEFT
    first()
    # Nothing held for the call that left: the pool's one place and both of the server's are free.
    assert callable(await pool.admit(server, stream=False, receive=STILL_HERE))
    assert await server.take(None) and server.full  # the server's other place was free too


async def test_a_call_that_gets_its_place_stops_watching_its_client() -> None:
    _, _, first, client, waiting = await _second_call_waiting()
    first()
    place = await asyncio.wait_for(waiting, 30)
    assert callable(place)
    client.leave()  # after its place: the call goes on, and nothing is left watching
    await asyncio.sleep(0)
    assert client.asked == 1
    place()


async def test_a_call_with_free_places_does_not_watch_its_client() -> None:
    """The hot path: no task per call when both places are free."""
    pool = UpstreamPool(streams=1, calls=2, call_wait=30)
    client = Client()
    place = await pool.admit(Slots(2), stream=False, receive=client.receive)
    assert callable(place) and client.asked == 0


async def test_a_client_that_leaves_as_its_place_is_granted_leaks_no_place() -> None:
    pool, server, first, client, waiting = await _second_call_waiting()
    client.leave()
    first()  # the same moment: whichever wins, no place may be lost
    outcome = await asyncio.wait_for(waiting, 30)
    if callable(outcome):
        outcome()
    for _ in range(2):  # twice: each place has come back every time
        place = await pool.admit(server, stream=False, receive=STILL_HERE)
        assert callable(place)
        place()
    assert [await server.take(None), await server.take(None)] == [True, True]


def test_calls_in_flight_are_capped_per_user_on_a_server_whatever_her_clients() -> None:
    caps = CallCaps(per_user=2)
    held = [caps.take(principal("alice", agent=agent)) for agent in ("one", "two")]
    assert all(callable(place) for place in held)
    assert caps.take(principal("alice", agent="three")) == CapReached("limits.calls_per_user", 2, 429)
    # Another user, or the same user on another server, has places of her own.
    assert callable(caps.take(principal("bob"))) and callable(caps.take(principal("alice", server="other")))
    release = held[0]
    assert callable(release)
    release()
    assert callable(caps.take(principal("alice", agent="three")))  # the place came back


@pytest.mark.parametrize(("table", "key"), [
    ({"streams_per_principal": 0}, "limits.streams_per_principal"),
    ({"upstream_streams": 0}, "limits.upstream_streams"),
    ({"streams_per_session": 9}, "limits.streams_per_session"),  # more than streams_per_principal (8)
    ({"streams_per_user": 0}, "limits.streams_per_user"),
    ({"streams_per_user": 4}, "limits.streams_per_principal"),  # streams_per_principal (8) more than a user's
    ({"calls_per_user": 0}, "limits.calls_per_user"),
])
def test_stream_limits_out_of_range_are_config_errors(table: dict[str, int], key: str) -> None:
    with pytest.raises(ConfigError) as raised:
        limit_settings(table)
    assert key in str(raised.value)


def test_stream_limits_are_read() -> None:
    limits = limit_settings({"upstream_streams": 64, "streams_per_user": 6, "streams_per_principal": 4,
                             "streams_per_session": 2})
    assert (limits.upstream_streams, limits.streams_per_user, limits.streams_per_principal,
            limits.streams_per_session) == (64, 6, 4, 2)
    caps = StreamCaps.from_limits(limits)
    assert (caps.per_user, caps.per_principal, caps.per_session) == (6, 4, 2)
