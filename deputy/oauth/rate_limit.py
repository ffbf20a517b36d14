"""Sliding-window limits: registrations per address, failed sign-ins per user name.

In process, so each replica counts on its own (N replicas admit up to N times the limit).
The address is the TCP peer from the ASGI scope: behind a reverse proxy that is the
proxy's address, and all clients share one budget.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable

WINDOW = 60.0
MAX_ADDRESSES = 10_000


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

    def blocked(self, key: str) -> float | None:
        """Without counting: None when a new attempt would be admitted, else the seconds to wait."""
        t = self.clock()
        stamps = self._window(key, t)
        if len(stamps) >= self.per_minute:
            return max(stamps[0] + WINDOW - t, 0.0)
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
