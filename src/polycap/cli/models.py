"""``polycap models``: what can be loaded, by which backend, in which languages, offline or not."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from polycap.cli.app import app


@app.command("models")
def models_cmd(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List registered models and the name schemes of installed backends."""
    import polycap
    from polycap.registry import get_registry

    models = polycap.list_models()
    reg = get_registry()
    if as_json:
        data = {"models": models, "schemes": _schemes(reg), "plugin_errors": reg.plugin_errors}
        typer.echo(json.dumps(data, indent=2))
        return
    table = Table(title="polycap models")
    for col in ("name", "backend", "languages", "offline", "description"):
        table.add_column(col)
    for m in models:
        langs = ", ".join(m["languages"]) if m["languages"] else "any"
        name = m["name"] + (" (default)" if m["default"] else "")
        table.add_row(name, m["backend"], langs, "yes" if m["offline"] else "no", m["description"])
    console = Console()
    console.print(table)
    schemes = _schemes(reg)
    if schemes:
        console.print("Schemes: " + ", ".join(f"{s}:<ref> ({b})" for s, b in schemes.items()))
    for label, error in reg.plugin_errors.items():
        console.print(f"[yellow]plugin {label} failed to load: {error}[/yellow]")


def _schemes(reg) -> dict[str, str]:
    return {s: b.name for b in reg.backends.values() for s in b.schemes}
