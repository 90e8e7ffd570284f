"""polycap: multilingual image captioning — one contract, many backends, honest metrics.

    >>> import polycap
    >>> polycap.caption("photo.jpg", lang="de").text
    >>> model = polycap.load("polycap-base")
    >>> model.caption("photo.jpg", lang="fr", num_beams=3)

Importing polycap is light: torch, transformers and friends load only when a model needs them.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

from polycap._version import __version__
from polycap.errors import (
    ImageError,
    ModelNotFoundError,
    OptionError,
    PolycapError,
    UnsupportedLanguageError,
)
from polycap.types import Alternative, Caption, GenerationOptions

if TYPE_CHECKING:
    from polycap.backends.base import Captioner

__all__ = [
    "Alternative",
    "Caption",
    "GenerationOptions",
    "ImageError",
    "ModelNotFoundError",
    "OptionError",
    "PolycapError",
    "UnsupportedLanguageError",
    "__version__",
    "caption",
    "default_model",
    "list_models",
    "load",
]


def default_model() -> str:
    """Name of the default model (polycap-base once installed with the package)."""
    from polycap.registry import get_registry

    return get_registry().default_model()


def load(name: str | None = None, device: str = "auto", **kwargs: Any) -> Captioner:
    """Build a captioner from a registered name, a ``scheme:ref`` or a local model folder."""
    from polycap.registry import get_registry

    return get_registry().load(name, device=device, **kwargs)


def list_models() -> list[dict[str, Any]]:
    """Registered models with backend, languages, offline availability and default flag."""
    from polycap.registry import get_registry

    return get_registry().list_models()


@lru_cache(maxsize=4)
def _cached(name: str, device: str) -> Captioner:
    return load(name, device=device)


def caption(
    images: Any, model: str | None = None, lang: str | None = None, device: str = "auto", **options: Any
) -> Caption | list[Caption]:
    """Caption one image (returns a Caption) or a list of images (returns a list).

    Inputs are anything :func:`polycap.images.load_image` accepts; options are
    :class:`GenerationOptions` fields. The model is loaded once and kept for later calls.
    """
    captioner = _cached(model or default_model(), device)
    if lang is not None:
        options["lang"] = lang
    single = not isinstance(images, (list, tuple))
    results = captioner.caption_many([images] if single else list(images), **options)
    return results[0] if single else results
