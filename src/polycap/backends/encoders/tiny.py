"""A tiny random conv encoder: the image encoder of the tiny test models of every family.

Its weights are a function of the seed alone, so a saved tiny model folder needs no encoder weights.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import nn


class TinyConvEncoder(nn.Module):
    """A 2-layer conv net giving a (B, 16, dim) grid from 32x32 images: same interface as the
    real encoders (name, preprocessing_id, preprocess, forward, feature_dim, grid_positions)."""

    name = "tiny-conv"
    exports_to_onnx = True  # polycap.runtime.onnx.fast_encoder may run it on onnxruntime (tests do)
    image_size = 32

    def __init__(self, dim: int = 16, seed: int = 0):
        super().__init__()
        self.feature_dim = dim
        self.grid_positions = 16
        with torch.random.fork_rng(devices=[]):  # weights are a function of the seed alone,
            torch.manual_seed(seed)  # so a saved folder needs no encoder weights
            self.net = nn.Sequential(
                nn.Conv2d(3, dim, 3, stride=2, padding=1),
                nn.GELU(),
                nn.Conv2d(dim, dim, 3, stride=4, padding=1),
                nn.GELU(),
            )
        self.requires_grad_(False)
        self.eval()

    def preprocessing_id(self) -> str:
        return "resize32-unit"

    def preprocess(self, images: list[Image.Image]) -> torch.Tensor:
        arrs = [np.asarray(im.convert("RGB").resize((32, 32), Image.BILINEAR)) for im in images]
        x = torch.from_numpy(np.stack(arrs)).permute(0, 3, 1, 2).float() / 255.0
        return (x - 0.5) / 0.5  # (B, 3, 32, 32)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.net(pixels).flatten(2).transpose(1, 2)  # (B, 16, dim)
