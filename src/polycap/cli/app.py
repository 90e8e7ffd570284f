"""The Typer app with every command on it, and ``main(argv)`` for tests and the script.

Commands are plain functions in their own modules; :mod:`polycap.cli.commands` names them and this
module attaches them to the app, so no command module imports the app back.
"""

from __future__ import annotations

import logging

import typer

from polycap._version import __version__
from polycap.cli.commands import COMMANDS
from polycap.cli.common import EXIT_OK, EXIT_USAGE, err
from polycap.errors import PolycapError

app = typer.Typer(
    name="polycap",
    help="Multilingual image captioning: caption, evaluate, train and serve.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"polycap {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug information to stderr."),
) -> None:
    level = logging.DEBUG if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


for _name, _command in COMMANDS.items():
    app.command(_name)(_command)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 some items failed, 2 usage error).

    Click's standalone mode prints usage errors itself and exits; catching SystemExit keeps
    this independent of which click typer bundles.
    """
    command = typer.main.get_command(app)
    try:
        command.main(args=argv, prog_name="polycap", standalone_mode=True)
    except SystemExit as e:
        code = e.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except PolycapError as e:
        err.print(f"error: {e}", markup=False)
        return EXIT_USAGE
    return EXIT_OK
