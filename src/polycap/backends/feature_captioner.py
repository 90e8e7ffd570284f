"""Shared base of the local torch captioners that encode images once into features.

polycap's own models and ClipCap both run a frozen image encoder, then decode from its features once
per requested language. Evaluation and training call ``caption_features`` on cached features directly.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image

from polycap.backends.base import Captioner
from polycap.errors import PolycapError
from polycap.types import Caption, GenerationOptions


class FeatureCaptioner(Captioner):
    """Subclasses set ``self.encoder`` (with ``preprocess``) and ``self.device``, and implement
    ``caption_features``."""

    encoder: torch.nn.Module | None
    device: str

    def caption_batch(self, images: Sequence[Image.Image], options: GenerationOptions) -> list[Caption]:
        return self.caption_features(self.encode(images), options)

    def caption_batch_langs(
        self, images: Sequence[Image.Image], per_lang: Sequence[GenerationOptions]
    ) -> list[list[Caption]]:
        features = self.encode(images)  # once, whatever the number of languages
        return [self.caption_features(features, opts) for opts in per_lang]

    @torch.inference_mode()
    def encode(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """RGB images -> the encoder's features, e.g. a (B, N, C) grid."""
        if self.encoder is None:
            raise PolycapError(f"model {self.name!r} was built without an image encoder")
        return self.encoder(self.encoder.preprocess(list(images)).to(self.device))

    def caption_features(self, features: torch.Tensor, options: GenerationOptions) -> list[Caption]:
        """Caption precomputed features in ``options.lang``."""
        raise NotImplementedError
