"""Atomic, resumable checkpoints: weights in safetensors, optimizer state via torch, state in JSON."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file


def save_checkpoint(folder: Path, model: torch.nn.Module, optimizer: Any, scheduler: Any, state: dict) -> None:
    """Write to ``folder.tmp`` then swap it in, so a kill never leaves a half-written checkpoint."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if hasattr(model, "trainable_state_dict"):  # e.g. clipcap: adapters (+ LoRA), never a frozen LM
        weights = {k: v.cpu().contiguous() for k, v in model.trainable_state_dict().items()}
    else:  # the lm_head is tied to the token embedding
        full = model.state_dict()
        weights = {k: v.detach().cpu().contiguous() for k, v in full.items() if k != "decoder.lm_head.weight"}
    save_file(weights, str(tmp / "model.safetensors"))
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
    state = load_file(str(path))
    if hasattr(model, "load_trainable_state_dict"):
        model.load_trainable_state_dict(state)
    else:
        model.load_state_dict(state, strict=False)
        model.decoder.tie_weights()


def load_checkpoint(folder: Path, model: torch.nn.Module, optimizer: Any, scheduler: Any) -> dict:
    load_weights(folder / "model.safetensors", model)
    extra = torch.load(folder / "optimizer.pt", weights_only=False)
    optimizer.load_state_dict(extra["optimizer"])
    scheduler.load_state_dict(extra["scheduler"])
    torch.set_rng_state(extra["rng"])
    return json.loads((folder / "state.json").read_text())
