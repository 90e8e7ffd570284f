"""``polycap finetune``: LoRA fine-tuning of a Hugging Face captioner (``hf:...``) on a caption manifest."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from polycap.cli.common import err, usage_error
from polycap.errors import PolycapError


def finetune_cmd(
    model: str = typer.Option(..., "--model", "-m", help="Base model: hf:<hub id> or hf:<folder>."),
    data: Path = typer.Option(..., "--data", help="Caption manifest (JSON Lines); splits train and val."),
    out: Path = typer.Option(..., "--out", "-o", help="Run folder; polycap.load(OUT) loads the result."),
    lang: str = typer.Option("en", "--lang", "-l", help="Caption language to train on."),
    lora_r: int = typer.Option(16, "--lora-r", min=1, help="LoRA rank."),
    lora_alpha: int = typer.Option(32, "--lora-alpha", min=1, help="LoRA alpha (scale = alpha / r)."),
    lora_dropout: float = typer.Option(0.05, "--lora-dropout", min=0.0, max=1.0, help="LoRA dropout."),
    target_modules: str = typer.Option("auto", "--target-modules", help="auto or comma-separated module names."),
    epochs: int = typer.Option(3, "--epochs", min=1, help="Maximum epochs."),
    lr: float = typer.Option(1e-4, "--lr", help="Learning rate (AdamW)."),
    batch_size: int = typer.Option(8, "--batch-size", min=1, help="Pairs per step."),
    patience: int = typer.Option(2, "--early-stopping-patience", min=0, help="Epochs without improvement; 0=off."),
    eval_metric: str = typer.Option("loss", "--eval-metric", help="loss or CIDEr (validation, each epoch)."),
    merge: bool = typer.Option(False, "--merge", help="Also save base + adapter merged (OUT/merged)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT/last.pt."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:1, mps."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Fine-tune LoRA adapters; the best epoch's adapter is kept. Prints a JSON summary."""
    from polycap.train.finetune import FinetuneConfig, finetune

    try:
        cfg = FinetuneConfig(
            model=model, data=data, out=out, lang=lang, lora_r=lora_r, lora_alpha=lora_alpha,
            lora_dropout=lora_dropout, target_modules=target_modules, epochs=epochs, lr=lr, batch_size=batch_size,
            early_stopping_patience=patience, eval_metric=eval_metric, merge=merge, seed=seed, device=device,
        )  # fmt: skip
        report = None if quiet else (lambda line: err.print(line, markup=False))
        summary = finetune(cfg, progress=not quiet, resume=resume, report=report)
    except PolycapError as e:
        raise usage_error(str(e)) from e
    typer.echo(json.dumps(summary))
