"""Atomic, resumable checkpoints: weights in safetensors, optimizer state via torch, state in JSON."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from polycap.errors import PolycapError


def model_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """What a checkpoint stores of ``model``: what trains (clipcap), else all but the tied lm_head."""
    if hasattr(model, "trainable_state_dict"):  # e.g. clipcap: adapters (+ LoRA), never a frozen LM
        return {k: v.detach().cpu().contiguous() for k, v in model.trainable_state_dict().items()}
    full = model.state_dict()  # the lm_head is tied to the token embedding
    return {k: v.detach().cpu().contiguous() for k, v in full.items() if k != "decoder.lm_head.weight"}


def save_checkpoint(folder: Path, model: torch.nn.Module, optimizer: Any, scheduler: Any, state: dict,
                    ema: torch.nn.Module | None = None) -> None:
    """Write to ``folder.tmp`` then swap it in, so a kill never leaves a half-written checkpoint.

    ``ema``: the moving average of the weights (a ``torch.optim.swa_utils.AveragedModel``), kept in
    ``ema.safetensors`` beside the live weights so a resumed run continues the same average.
    """
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file(model_weights(model), str(tmp / "model.safetensors"))
    if ema is not None:
        save_file({**model_weights(ema.module), "n_averaged": ema.n_averaged.cpu()}, str(tmp / "ema.safetensors"))
    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "rng": torch.get_rng_state()}, tmp / "optimizer.pt")
    (tmp / "state.json").write_text(json.dumps(state, indent=2) + "\n")
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def load_weights(path: Path, model: torch.nn.Module) -> None:
    """Weights written by ``save_checkpoint`` (or a model folder's ``model.safetensors``) into ``model``:
    only what trains for models that say so (clipcap), else the full state with the tied lm_head."""
    apply_weights(load_file(str(path)), model)


def apply_weights(state: dict[str, torch.Tensor], model: torch.nn.Module) -> None:
    if hasattr(model, "load_trainable_state_dict"):
        model.load_trainable_state_dict(state)
    else:
        model.load_state_dict(state, strict=False)
        model.decoder.tie_weights()


def load_checkpoint(folder: Path, model: torch.nn.Module, optimizer: Any, scheduler: Any,
                    ema: torch.nn.Module | None = None) -> dict:
    load_weights(folder / "model.safetensors", model)
    if ema is not None:
        if not (folder / "ema.safetensors").is_file():
            raise PolycapError(f"{folder} has no ema.safetensors: the run was started with train.ema=0")
        weights = load_file(str(folder / "ema.safetensors"))
        ema.n_averaged.copy_(weights.pop("n_averaged"))
        apply_weights(weights, ema.module)
    extra = torch.load(folder / "optimizer.pt", weights_only=False)
    optimizer.load_state_dict(extra["optimizer"])
    scheduler.load_state_dict(extra["scheduler"])
    torch.set_rng_state(extra["rng"])
    return json.loads((folder / "state.json").read_text())
