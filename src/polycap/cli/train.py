"""``polycap train``: train polycap's own captioners or clipcap prefix adapters from caption manifests."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from polycap.cli.common import usage_error
from polycap.errors import PolycapError


def train_cmd(
    config: Path | None = typer.Option(None, "--config", "-c", help="Training config (YAML or JSON)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder: checkpoints, log.jsonl, best/ model."),
    overrides: list[str] = typer.Option([], "--set", help="Override a config value: --set train.epochs=5."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the run folder's last checkpoint."),
    langs: list[str] = typer.Option([], "--lang", help="Languages (repeatable, or en,de): data.langs."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Train a captioner; the best epoch (by mean val CIDEr) is saved as a model folder in OUT/best."""
    from polycap.train.config import load_config

    try:
        if resume and config is None and (out / "config.yaml").is_file():
            config = out / "config.yaml"  # the run's own resolved config
        if langs:
            codes = [x.strip() for item in langs for x in item.split(",") if x.strip()]
            overrides = [*overrides, f"data.langs=[{','.join(codes)}]"]
        cfg = load_config(config, overrides)
        if not cfg.data.manifests:
            raise usage_error("no training data: set data.manifests in the config or --set data.manifests=[...]")
        from polycap.train.trainer import make_trainer

        summary = make_trainer(cfg, out, progress=not quiet).run(resume=resume)
    except PolycapError as e:
        raise usage_error(str(e)) from e
    typer.echo(json.dumps(summary))


def merge_adapters_cmd(
    folders: list[Path] = typer.Argument(..., help="clipcap model folders (e.g. runs/en/best runs/de/best)."),
    out: Path = typer.Option(..., "--out", "-o", help="The merged model folder (new or empty)."),
    name: str | None = typer.Option(None, "--name", help="Model name (default: the first folder's)."),
) -> None:
    """Merge clipcap folders over the same encoder and frozen LM into one multilingual model folder."""
    from polycap.backends.clipcap.merge import merge_folders

    try:
        cfg = merge_folders(folders, out, name=name)
    except PolycapError as e:
        raise usage_error(str(e)) from e
    typer.echo(json.dumps({"out": str(out), "languages": cfg.languages}))
