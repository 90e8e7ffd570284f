"""Atomic, resumable checkpoints. What they hold is the same for every recipe (``Checkpoint``); where it
goes is a folder (weights in safetensors, the train state in JSON: polycap train) or one file (``last.pt``:
polycap finetune). A kill never leaves a half-written checkpoint: each is written beside, then swapped in.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from polycap.errors import PolycapError


@dataclass
class Checkpoint:
    weights: dict[str, torch.Tensor]  # what the recipe saves of the model (what trains)
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: torch.Tensor  # torch's CPU generator, so dropout and sampling continue where they stopped
    state: dict[str, Any]  # the engine's TrainState
    ema: dict[str, torch.Tensor] | None = None  # the moving average of the weights, with "n_averaged"


def _untied(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    out, seen = {}, set()
    for k, v in model.state_dict(keep_vars=True).items():
        same = (v.data_ptr(), tuple(v.shape), tuple(v.stride()))
        if v.numel() and same in seen:
            continue
        seen.add(same)
        out[k] = v
    return out


def model_weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``model``'s state as a checkpoint stores it: detached CPU tensors, each once. A weight tied to
    an earlier one (GPT-2's output layer is its token embedding) is left out; loading keeps the tie."""
    return detached(_untied(model))


def tied_keys(model: torch.nn.Module) -> set[str]:
    """The state keys ``model_weights`` leaves out: weights tied to another one."""
    return set(model.state_dict()) - set(_untied(model))


def detached(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def replace_folder(folder: Path, write: Callable[[Path], None]) -> None:
    """Run ``write(tmp)`` into a fresh ``folder.tmp``, then swap it in for ``folder``."""
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write(tmp)
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    tmp.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


class FolderCheckpoint:
    """``model.safetensors``, ``ema.safetensors`` (with ``train.ema``), ``optimizer.pt`` (optimizer,
    schedule, RNG) and ``state.json`` in one folder."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def exists(self) -> bool:
        return (self.path / "state.json").is_file()

    def read_state(self) -> dict[str, Any]:
        return json.loads((self.path / "state.json").read_text())

    def save(self, ck: Checkpoint) -> None:
        def write(tmp: Path) -> None:
            save_file(ck.weights, str(tmp / "model.safetensors"))
            if ck.ema is not None:
                save_file(ck.ema, str(tmp / "ema.safetensors"))
            torch.save({"optimizer": ck.optimizer, "scheduler": ck.scheduler, "rng": ck.rng}, tmp / "optimizer.pt")
            (tmp / "state.json").write_text(json.dumps(ck.state, indent=2) + "\n")

        replace_folder(self.path, write)

    def load(self, ema: bool) -> Checkpoint:
        """``ema``: the run keeps a moving average, so the checkpoint must hold one."""
        if ema and not (self.path / "ema.safetensors").is_file():
            raise PolycapError(f"{self.path} has no ema.safetensors: the run was started with train.ema=0")
        extra = torch.load(self.path / "optimizer.pt", weights_only=False)
        return Checkpoint(load_file(str(self.path / "model.safetensors")), extra["optimizer"], extra["scheduler"],
                          extra["rng"], self.read_state(),
                          load_file(str(self.path / "ema.safetensors")) if ema else None)


class FileCheckpoint:
    """Everything in one torch file (``last.pt`` of ``polycap finetune``)."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def exists(self) -> bool:
        return self.path.is_file()

    def _read(self) -> dict[str, Any]:
        saved = torch.load(self.path, map_location="cpu", weights_only=False)
        if "weights" not in saved:
            raise PolycapError(f"{self.path} was written by an older polycap and cannot be resumed; start the run "
                               "again without --resume")
        return saved

    def read_state(self) -> dict[str, Any]:
        return self._read()["state"]

    def save(self, ck: Checkpoint) -> None:
        tmp = self.path.with_suffix(".tmp")
        torch.save(vars(ck), tmp)
        tmp.replace(self.path)

    def load(self, ema: bool) -> Checkpoint:
        ck = Checkpoint(**self._read())
        if ema and ck.ema is None:
            raise PolycapError(f"{self.path} holds no moving average of the weights")
        return ck
