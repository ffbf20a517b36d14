"""A per-address sliding-window limit for the registration endpoint.

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
        t = self.clock()
        stamps = self._seen.pop(address, None) or deque()
        while stamps and stamps[0] <= t - WINDOW:
            stamps.popleft()
        self._seen[address] = stamps  # most recently seen last
        while len(self._seen) > MAX_ADDRESSES:
            self._seen.popitem(last=False)
        if len(stamps) >= self.per_minute:
            return max(stamps[0] + WINDOW - t, 0.0)
        stamps.append(t)
        return None

    @staticmethod
    def retry_after(seconds: float) -> str:
        return str(max(1, math.ceil(seconds)))
