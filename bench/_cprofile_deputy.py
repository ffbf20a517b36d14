"""Run the ``deputy`` CLI under cProfile; write pstats to OUT when it stops (SIGTERM/SIGINT).

Usage: python bench/_cprofile_deputy.py OUT serve
Used by ``tools_call.py --profile OUT``. cProfile slows Deputy down; use the
profile for where the time goes, not for how much there is.
"""

from __future__ import annotations

import cProfile
import signal
import sys

from deputy.cli import app


def main() -> None:
    out = sys.argv[1]
    profiler = cProfile.Profile()

    def stop(signum: int, _frame: object) -> None:
        # uvicorn captures SIGTERM, shuts down, restores this handler and re-raises the signal.
        profiler.disable()
        profiler.dump_stats(out)
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    profiler.enable()
    try:
        app(sys.argv[2:], standalone_mode=False)
    finally:
        profiler.disable()
        profiler.dump_stats(out)


if __name__ == "__main__":
    main()
