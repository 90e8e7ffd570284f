"""Small torch helpers shared by the torch backends (imported lazily: torch is an extra)."""

from __future__ import annotations

from typing import Any

from polycap.errors import MissingDependencyError, OptionError
from polycap.types import GenerationOptions


def require_torch() -> Any:
    try:
        import torch
    except ImportError as e:  # pragma: no cover - exercised only without the extra
        raise MissingDependencyError("torch", "torch", "local models") from e
    return torch


def resolve_device(device: str | None) -> str:
    """'auto' -> 'cuda' when available, else 'mps' when available, else 'cpu'."""
    torch = require_torch()
    if device in (None, "auto"):
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise OptionError(f"device {device!r} requested but CUDA is not available")
    return device


def generate_kwargs(options: GenerationOptions) -> dict[str, Any]:
    """Map polycap's options onto transformers ``generate()`` keyword arguments."""
    kw: dict[str, Any] = {
        "max_new_tokens": options.max_new_tokens,
        "min_new_tokens": options.min_new_tokens,
        "num_beams": options.num_beams,
        "do_sample": options.do_sample,
        "num_return_sequences": options.num_return_sequences,
        "length_penalty": options.length_penalty,
        "no_repeat_ngram_size": options.no_repeat_ngram_size,
    }
    if options.do_sample:
        kw.update(temperature=options.temperature, top_p=options.top_p, top_k=options.top_k or 0)
    return kw


def seed_everything(seed: int | None) -> None:
    if seed is not None:
        torch = require_torch()
        torch.manual_seed(seed)
