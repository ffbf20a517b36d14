"""Start-up failures: one line on standard error naming the cause and the fix, and a documented exit code.

The one home of "this cannot start" (README, "Exit codes"). Every command that opens Deputy's storage or starts a
listener passes what went wrong through :func:`exit_on_failure`, which prints the line and exits with the code of
its class:

====  =========================================================================================================
 1    anything else (a bug): its type and message, and how to see the traceback
 2    the configuration: a bad or missing value, no configuration at all, a policy directory or stdio command
      that does not exist, policies that cannot be used
 3    the database: unreachable (refused, unresolvable, timed out) or refusing the credentials or the database
 4    an address to listen on (the public one, the demo upstream's, ``metrics.listen``) is in use or cannot be
      bound
 5    the data directory cannot be written
 6    ``[audit] origin`` names another log than the data directory's audit key
====  =========================================================================================================

Whether a traceback is shown is decided here too, from the log level: at ``debug`` (``--log-level debug`` or
``DEPUTY_LOG_LEVEL=debug``) it is printed before the line; at any other level never. The database's URL is shown
with its password hidden (SQLAlchemy's ``render_as_string(hide_password=True)``).
"""

from __future__ import annotations

import errno
import traceback
from typing import TYPE_CHECKING, NoReturn

import typer
from rich.text import Text

from deputy.cli.terminal_text import line, operator_console
from deputy.display_text import visible

if TYPE_CHECKING:
    from sqlalchemy.exc import SQLAlchemyError

EXIT_OTHER = 1
EXIT_CONFIG = 2
EXIT_DATABASE = 3
EXIT_ADDRESS = 4
EXIT_DATA_DIR = 5
EXIT_AUDIT_ORIGIN = 6

MAX_PROBLEMS = 5  # of an unusable policy set's, on the one line
MAX_CAUSE = 300  # characters of a driver's message shown; a server may send a long one
DEBUG_HINT = "run with --log-level debug (or DEPUTY_LOG_LEVEL=debug) for the traceback"

_err = operator_console(stderr=True)


class StartupFailure(Exception):
    """A failure already described for the operator: ``message`` names the cause and the fix."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def safe_url(url: str) -> str:
    """A database URL with its password hidden."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(database_url)"


def _root_cause(exc: BaseException) -> BaseException:
    """The deepest exception a chain of wrappers (SQLAlchemy's, the driver adapter's) was raised from."""
    seen: set[int] = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        nested = exc.__cause__ or getattr(exc, "orig", None) or exc.__context__
        if not isinstance(nested, BaseException):
            break
        exc = nested
    return exc


def _cause_text(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    else:
        lines = str(exc).strip().splitlines()
        text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= MAX_CAUSE else text[:MAX_CAUSE] + "…"


def database_failure(exc: SQLAlchemyError, database_url: str) -> StartupFailure:
    """The database could not be used: unreachable, or it refused who Deputy is (or what it asked for)."""
    cause = _root_cause(exc)
    where = safe_url(database_url)
    if isinstance(cause, OSError | TimeoutError):
        return StartupFailure(EXIT_DATABASE, f"cannot reach the database {where}: {_cause_text(cause)}; start it, "
                                             "or correct database_url (DEPUTY_DATABASE_URL)")
    return StartupFailure(EXIT_DATABASE, f"the database {where} refused Deputy: {_cause_text(cause)}; correct the "
                                         "user, password or database name in database_url (DEPUTY_DATABASE_URL)")


def describe(exc: BaseException, database_url: str | None = None) -> StartupFailure | None:
    """What ``exc`` means for the operator, or None when it is none of the known failures (a bug)."""
    # The classes are imported here, on the way out, not with this module: every command imports it, and the
    # failures it knows come from SQLAlchemy, Cedar and the metrics listener, a second of imports together.
    from sqlalchemy.exc import SQLAlchemyError

    from deputy.audit.settings import AuditOriginMismatch
    from deputy.config_values import ConfigError
    from deputy.policy.sources import PolicyLoadError
    from deputy.telemetry.metrics_listener import MetricsListenerError

    if isinstance(exc, StartupFailure):
        return exc
    if isinstance(exc, ConfigError):
        return StartupFailure(EXIT_CONFIG, str(exc))
    if isinstance(exc, PolicyLoadError):
        problems = "; ".join(str(problem) for problem in exc.problems[:MAX_PROBLEMS])
        more = f" (and {len(exc.problems) - MAX_PROBLEMS} more)" if len(exc.problems) > MAX_PROBLEMS else ""
        return StartupFailure(EXIT_CONFIG, f"policies cannot be used: {problems}{more}; correct them (`deputy policy "
                                           "validate` lists every problem)")
    if isinstance(exc, MetricsListenerError):
        return StartupFailure(EXIT_ADDRESS, f"{exc}; free it, or set metrics.listen to another address")
    if isinstance(exc, AuditOriginMismatch):
        return StartupFailure(EXIT_AUDIT_ORIGIN, str(exc))
    if isinstance(exc, SQLAlchemyError) and database_url is not None:
        return database_failure(exc, database_url)
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return StartupFailure(EXIT_ADDRESS, f"an address Deputy listens on is in use ({_cause_text(exc)}); free "
                                            "it, or configure another")
    return None


def exit_on_failure(exc: BaseException, log_level: str, database_url: str | None = None, *,
                    unknown: bool = True) -> NoReturn:
    """Print ``exc`` as one line (after its traceback at ``debug``) and exit with its code.

    An exception none of the known failures describes is printed as ``Type: message`` with exit code 1 when
    ``unknown`` (start-up: whatever stops it is one line), else raised again (an admin command's bug keeps its
    traceback).
    """
    failure = describe(exc, database_url)
    if failure is None and not unknown:
        raise exc
    if log_level == "debug":
        trace = "".join(traceback.format_exception(exc)).rstrip("\n")
        _err.print(Text(visible(trace, newlines=True)), soft_wrap=True)
    if failure is None:
        message = str(exc).strip().splitlines()
        shown = f"{type(exc).__name__}: {message[0]}" if message else type(exc).__name__
        failure = StartupFailure(EXIT_OTHER, f"Deputy could not start: {shown}; {DEBUG_HINT}")
    _err.print(line(failure.message, style="red"), soft_wrap=True)  # one line however long: never re-wrapped
    raise typer.Exit(failure.code) from None
