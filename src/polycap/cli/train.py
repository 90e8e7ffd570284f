"""``polycap train``: train polycap's own captioners from caption manifests."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from polycap.cli.app import app, usage_error
from polycap.errors import PolycapError


@app.command("train")
def train_cmd(
    config: Path | None = typer.Option(None, "--config", "-c", help="Training config (YAML or JSON)."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder: checkpoints, log.jsonl, best/ model."),
    overrides: list[str] = typer.Option([], "--set", help="Override a config value: --set train.epochs=5."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the run folder's last checkpoint."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Train a captioner; the best epoch (by mean val CIDEr) is saved as a model folder in OUT/best."""
    from polycap.train.config import load_config

    try:
        if resume and config is None and (out / "config.yaml").is_file():
            config = out / "config.yaml"  # the run's own resolved config
        cfg = load_config(config, overrides)
        if not cfg.data.manifests:
            raise usage_error("no training data: set data.manifests in the config or --set data.manifests=[...]")
        from polycap.train.trainer import Trainer

        summary = Trainer(cfg, out, progress=not quiet).run(resume=resume)
    except PolycapError as e:
        raise usage_error(str(e)) from e
    typer.echo(json.dumps(summary))
