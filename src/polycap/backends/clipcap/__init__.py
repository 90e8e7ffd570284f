"""ClipCap prefix captioners over any causal LM, one prefix adapter per language (see docs/clipcap.md).

``polycap.load("clipcap:/a/model/folder")`` or a folder whose ``config.json`` says ``backend: clipcap``.
torch/transformers are imported only when a model is loaded, so registering costs nothing.
"""

from __future__ import annotations

from typing import Any


def _load(ref: str, *, device: str = "auto", name: str | None = None, **kwargs: Any):
    from polycap.backends.clipcap.backend import load_clipcap  # torch is imported only here

    return load_clipcap(ref, device=device, name=name, **kwargs)


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
