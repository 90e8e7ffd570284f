"""``polycap train``: the recipe for ``model.arch``, trained by the one engine (train/engine.py).

    make_trainer(load_config("configs/polycap-base.yaml"), "runs/polycap-base").run()

``transformer`` and ``lstm`` are polycap's own models (train/native.py), ``clipcap`` prefix adapters
over a causal LM (train/clipcap.py); both train on cached encoder features (train/feature_recipe.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from polycap.train.config import TrainConfig
from polycap.train.feature_recipe import FeatureRecipe
from polycap.train.native import NativeRecipe

Trainer = NativeRecipe  # the name polycap's own models' recipe had before recipes


def make_trainer(cfg: TrainConfig, out: str | Path, progress: bool = True, encoder: Any = None) -> FeatureRecipe:
    """The recipe for ``cfg.model.arch``; ``.run(resume)`` trains it."""
    if cfg.model.arch == "clipcap":
        from polycap.train.clipcap import ClipCapRecipe  # transformers is imported only here

        return ClipCapRecipe(cfg, out, progress=progress, encoder=encoder)
    return NativeRecipe(cfg, out, progress=progress, encoder=encoder)
