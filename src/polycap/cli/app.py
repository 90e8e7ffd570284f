"""The Typer app every command module attaches to, and ``main(argv)`` for tests and the script."""

from __future__ import annotations

import logging

import typer
from rich.console import Console
from rich.text import Text

from polycap._version import __version__
from polycap.errors import PolycapError

app = typer.Typer(
    name="polycap",
    help="Multilingual image captioning: caption, evaluate, train and serve.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Text printed here is never read as rich markup: messages carry brackets ("pip install
# 'polycap[gemma]'") that markup would silently drop. Style with ``Text`` where colour helps.
err = Console(stderr=True, markup=False, highlight=False, emoji=False, soft_wrap=True)
out = Console(markup=False, highlight=False, emoji=False)

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2


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


def usage_error(message: str) -> typer.Exit:
    """Print a usage error and return the Exit to raise (exit code 2)."""
    err.print(Text.assemble(("error:", "red"), " ", message))
    return typer.Exit(EXIT_USAGE)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 some items failed, 2 usage error).

    Click's standalone mode prints usage errors itself and exits; catching SystemExit keeps
    this independent of which click typer bundles.
    """
    from polycap.cli import commands  # noqa: F401 - registers the commands on ``app``

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
