"""Sliding-window limits (registrations per address) and the back-off after failed sign-ins.

In process, so each replica counts on its own (N replicas admit up to N times the limit); the N workers of
one ``serve --workers N`` each take their share of a limit (:func:`deputy.limits.worker_share`).
The address is the client's from the ASGI scope (:func:`client_key`): the TCP peer, or, behind a proxy named in
``trusted_proxies``, the client it forwarded for (:mod:`deputy.forwarded_client`); behind a proxy not named
there, all clients share the proxy's one budget. An IPv6 peer is counted by its /64 (RFC 4291 §2.5.4:
one network's interface identifiers), since whoever holds one address of a /64 usually holds them all.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from starlette.requests import HTTPConnection

WINDOW = 60.0
MAX_ADDRESSES = 10_000
PENDING_RETRY = 1.0  # blocked only by attempts still in flight: their outcome is known within about a second


def client_key(request: HTTPConnection) -> str:
    """The budget the request's client counts against (:func:`address_key` of its address)."""
    return address_key(request.client.host if request.client is not None else None)


def address_key(host: str | None) -> str:
    """The budget a peer address counts against: an IPv4 address itself, an IPv6 address its /64."""
    if host is None:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:  # an IPv4 peer on a dual-stack socket
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class SlidingWindowLimiter:
    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.clock = clock
        self._seen: OrderedDict[str, deque[float]] = OrderedDict()

    def admit(self, address: str) -> float | None:
        """Count one attempt; None when admitted, else the seconds until one would be."""
        wait = self.blocked(address)
        if wait is None:
            self.record(address)
        return wait

    def blocked(self, key: str, pending: int = 0) -> float | None:
        """Without counting: None when a new attempt would be admitted, else the seconds to wait.

        ``pending``: attempts already heard whose outcome is not known yet, each of which may still be counted;
        they take their place in the window now, so requests sent all at once cannot all slip in before the first
        is counted."""
        t = self.clock()
        stamps = self._window(key, t)
        if len(stamps) + pending >= self.per_minute:
            return max(stamps[0] + WINDOW - t, 0.0) if stamps else PENDING_RETRY
        return None

    def record(self, key: str) -> None:
        """Count one event (an attempt, or only the failures, as the caller decides)."""
        t = self.clock()
        self._window(key, t).append(t)

    def _window(self, key: str, t: float) -> deque[float]:
        stamps = self._seen.pop(key, None) or deque()
        while stamps and stamps[0] <= t - WINDOW:
            stamps.popleft()
        self._seen[key] = stamps  # most recently seen last
        while len(self._seen) > MAX_ADDRESSES:
            self._seen.popitem(last=False)
        return stamps

    @staticmethod
    def retry_after(seconds: float) -> str:
        return str(max(1, math.ceil(seconds)))


class FailureBackoff:
    """Failed sign-ins per (client address, user name): a growing wait, never a lock-out.

    The first ``free`` failures cost nothing; from the next one on, each failure doubles the
    wait before the next attempt from that address for that name (1 s, 2 s, 4 s … up to
    ``max_wait``); attempts made while waiting are refused unheard and count for nothing.
    Keyed by address *and* name, so a guesser slows only themself: the owner of the name,
    from another address, signs in at once with the right password. A success clears the
    record; a record is forgotten once ``forget_after`` seconds pass without a failure.
    """

    def __init__(self, free: int = 5, max_wait: float = 300.0, forget_after: float = 900.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.free = free
        self.max_wait = max_wait
        self.forget_after = forget_after
        self.clock = clock
        self._failures: OrderedDict[tuple[str, str], tuple[int, float]] = OrderedDict()

    def wait(self, address: str, name: str) -> float | None:
        """Seconds until an attempt for ``name`` from ``address`` is heard, or None when it is now."""
        record = self._current((address, name))
        if record is None:
            return None
        count, last = record
        remaining = last + self.delay(count) - self.clock()
        return remaining if remaining > 0 else None

    def delay(self, failures: int) -> float:
        if failures <= self.free:
            return 0.0
        return float(min(2.0 ** (failures - self.free - 1), self.max_wait))

    def failed(self, address: str, name: str) -> None:
        key = (address, name)
        record = self._current(key)
        self._failures[key] = ((record[0] if record else 0) + 1, self.clock())
        self._failures.move_to_end(key)
        while len(self._failures) > MAX_ADDRESSES:
            self._failures.popitem(last=False)

    def succeeded(self, address: str, name: str) -> None:
        self._failures.pop((address, name), None)

    def _current(self, key: tuple[str, str]) -> tuple[int, float] | None:
        record = self._failures.get(key)
        if record is not None and self.clock() - record[1] > self.forget_after:
            del self._failures[key]
            return None
        return record
