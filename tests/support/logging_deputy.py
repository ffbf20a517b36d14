"""``deputy serve`` with its log format and level chosen, standard error kept apart from standard output.

What the log tests read: standard error holds the log and nothing else (``log_level``, ``log_format``; issue 13),
standard output what ``deputy serve`` prints for the operator at start.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.databases import database_url
from tests.support.deputy_process import RunningDeputy, running_deputy


@contextmanager
def logging_deputy(directory: Path, upstream_url: str, extra: str, *, level: str, log_format: str,
                   backend: str = "sqlite", users: tuple[tuple[str, str], ...] = ()) -> Iterator[RunningDeputy]:
    """A running Deputy (alice and ``users`` added) whose log goes to ``directory/stderr.log``."""
    with database_url(backend, directory) as url, \
            running_deputy(directory, url, upstream_url, extra, users=users, stderr_apart=True,
                           environment={"DEPUTY_LOG_LEVEL": level, "DEPUTY_LOG_FORMAT": log_format}) as running:
        yield running


def stopped_log(deputy: RunningDeputy) -> list[str]:
    """Stop ``deputy`` (every line written and flushed) and return the lines of its log."""
    assert deputy.process is not None
    deputy.process.terminate()
    deputy.process.wait(10)
    return (deputy.config.parent / "stderr.log").read_text(errors="replace").splitlines()
