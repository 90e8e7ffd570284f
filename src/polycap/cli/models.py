"""``polycap models``: what can be loaded, by which backend, in which languages, offline or not."""

from __future__ import annotations

import json
import sys

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from polycap.cli.common import out, usage_error

FORMATS = ("table", "json", "names")


def models_cmd(
    fmt: str | None = typer.Option(
        None, "--format", "-f", help="table, json or names (one per line); default: table on a terminal, else names."
    ),
    as_json: bool = typer.Option(False, "--json", help="Same as --format json."),
) -> None:
    """List registered models and the name schemes of installed backends."""
    import polycap
    from polycap.registry import get_registry

    fmt = "json" if as_json else fmt or ("table" if sys.stdout.isatty() else "names")
    if fmt not in FORMATS:
        raise usage_error(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    models = polycap.list_models()
    reg = get_registry()
    if fmt == "json":
        data = {"models": models, "schemes": _schemes(reg), "plugin_errors": reg.plugin_errors}
        typer.echo(json.dumps(data, indent=2, ensure_ascii=False))
    elif fmt == "names":  # for scripts: names exactly as --model takes them
        for m in models:
            typer.echo(m["name"])
    else:
        _print_table(models, _schemes(reg), reg.plugin_errors)


def _print_table(models: list[dict], schemes: dict[str, str], plugin_errors: dict[str, str]) -> None:
    """A table whose names are never cut, however narrow the terminal: names are copied into --model.

    Cells are ``Text``, so brackets in descriptions ("needs polycap[gemma]") are shown, not read as markup.
    """
    rows = [
        (m["name"] + (" (default)" if m["default"] else ""), m["backend"], "yes" if m["offline"] else "no",
         ", ".join(m["languages"]) if m["languages"] else "any", m["description"] or "")
        for m in models
    ]  # fmt: skip
    header = ("name", "backend", "offline", "languages", "description")
    table = Table(title="polycap models")
    for col in header[:3]:  # never wrapped, so rich never shrinks them
        table.add_column(col, no_wrap=True)
    for col in header[3:]:  # these wrap (and fold long words) to fit the terminal
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*(Text(str(cell)) for cell in row))
    # Fixed columns in full, padding 2 and a border per column, at least 12 for each wrapping one;
    # on a terminal narrower than that, print wider lines rather than cut a name.
    fixed = sum(max([len(col), *(len(r[i]) for r in rows)]) for i, col in enumerate(header[:3]))
    needed = fixed + 12 * len(header[3:]) + 3 * len(header) + 1
    console = out if needed <= out.width else Console(file=out.file, width=needed, markup=False, highlight=False)
    console.print(table)
    if schemes:
        out.print("Schemes: " + ", ".join(f"{s}:<ref> ({b})" for s, b in schemes.items()))
    for label, error in plugin_errors.items():
        out.print(Text(f"plugin {label} failed to load: {error}", style="yellow"))


def _schemes(reg) -> dict[str, str]:
    return {s: b.name for b in reg.backends.values() for s in b.schemes}
