"""polycap's command line: one thin module per command, all on one Typer app."""

from polycap.cli.app import app, main

__all__ = ["app", "main"]
