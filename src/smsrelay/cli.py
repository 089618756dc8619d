"""The `smsrelay` command line."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="smsrelay: configure any HTTP SMS provider as a connector, send, and track delivery.",
    no_args_is_help=True,
    add_completion=False,
)
connectors_app = typer.Typer(help="Check, render and debug connector definitions.", no_args_is_help=True)
app.add_typer(connectors_app, name="connectors")


@app.command()
def version() -> None:
    """Print the smsrelay version."""
    from smsrelay import __version__

    typer.echo(__version__)
