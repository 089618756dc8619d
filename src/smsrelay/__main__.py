"""`python -m smsrelay` runs the command line."""

from smsrelay.cli import app

app()
