"""``python -m deputy`` runs the CLI."""

from deputy.cli import app

app()
