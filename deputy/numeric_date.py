"""JWT NumericDate values (RFC 7519 §2): seconds since the epoch, as a JSON number.

Python's JSON parser also yields ``NaN`` and ``Infinity``, which compare false (or
true) against everything and then fail in ``int()``; and a huge number overflows the
64-bit columns expiry moments are stored in. So a time claim counts only when it is
a finite number from 0 to the end of year 9999.
"""

from __future__ import annotations

import math
from typing import Any, TypeGuard

MAX_TIME = 253402300799  # 9999-12-31T23:59:59Z


def is_time(value: Any) -> TypeGuard[int | float]:
    return (isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
            and 0 <= value <= MAX_TIME)
