"""The ``deputy`` command."""

from deputy.cli.main import app

__all__ = ["app"]
