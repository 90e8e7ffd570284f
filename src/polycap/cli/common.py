"""What every command shares: the consoles, exit codes, usage errors, ``--lang`` and model loading.

Command modules import this, never :mod:`polycap.cli.app`: the app imports the commands (see
:mod:`polycap.cli.commands`), so nothing in ``cli/`` imports its way back up.
"""

from __future__ import annotations

from typing import Any

import typer
from rich.console import Console
from rich.text import Text

from polycap.errors import OptionError

# Text printed here is never read as rich markup: messages carry brackets ("pip install
# 'polycap[gemma]'") that markup would silently drop. Style with ``Text`` where colour helps.
err = Console(stderr=True, markup=False, highlight=False, emoji=False, soft_wrap=True)
out = Console(markup=False, highlight=False, emoji=False)

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2


def usage_error(message: str) -> typer.Exit:
    """Print a usage error and return the Exit to raise (exit code 2)."""
    err.print(Text.assemble(("error:", "red"), " ", message))
    return typer.Exit(EXIT_USAGE)


def split_langs(value: str | None) -> list[str] | None:
    """``"en,de"`` -> ["en", "de"]; None stays None (the model's default language)."""
    if value is None:
        return None
    langs = [x.strip() for x in value.split(",") if x.strip()]
    if not langs:
        raise OptionError(f"--lang got no language codes: {value!r}")
    return list(dict.fromkeys(langs))


def load_model(name: str | None, device: str, quiet: bool, **kwargs: Any) -> Any:
    """Load a model by name, or the default one with a notice when it is only the tiny model."""
    import polycap

    chosen = name or polycap.default_model()
    if name is None and chosen == "polycap-tiny-random" and not quiet:
        err.print(
            "note: polycap-base is not installed, so the default is polycap-tiny-random, "
            "which writes random words. Pass --model to choose another model."
        )
    return polycap.load(chosen, device=device, **kwargs)
