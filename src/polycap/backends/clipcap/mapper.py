"""Mapping networks: image features -> ``k`` prefix vectors in the LM's input embedding space.

Shapes: B images, N feature positions, C feature channels, k prefix length, D LM width.
One mapper per language; they share the image encoder and the LM.
"""

from __future__ import annotations

import torch
from torch import nn

from polycap.backends.clipcap.config import MapperConfig


class MLPMapper(nn.Module):
    """ClipCap's MLP: (B, C) -> Linear -> tanh -> Linear -> (B, k, D)."""

    def __init__(self, cfg: MapperConfig, feature_dim: int, lm_width: int):
        super().__init__()
        self.k, self.d = cfg.prefix_length, lm_width
        hidden = cfg.hidden or (feature_dim + self.k * lm_width) // 2
        self.net = nn.Sequential(
            nn.Linear(feature_dim, hidden), nn.Tanh(), nn.Dropout(cfg.dropout), nn.Linear(hidden, self.k * lm_width)
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        pooled = features.mean(dim=1) if features.ndim == 3 else features  # (B, C)
        return self.net(pooled).view(-1, self.k, self.d)  # (B, k, D)


class TransformerMapper(nn.Module):
    """k learned constant queries, concatenated to the image tokens, through a transformer encoder.

    Image tokens are the grid positions (``features: grid``, (B, N, C)) or, for a pooled vector,
    ``clip_length`` tokens expanded from it by one linear layer (as ClipCap's transformer mapper).
    """

    def __init__(self, cfg: MapperConfig, feature_dim: int, lm_width: int, pooled: bool):
        super().__init__()
        w = cfg.width
        self.pooled, self.clip_length = pooled, cfg.clip_length
        self.inp = nn.Linear(feature_dim, w * cfg.clip_length) if pooled else nn.Linear(feature_dim, w)
        self.queries = nn.Parameter(torch.randn(1, cfg.prefix_length, w) * 0.02)
        layer = nn.TransformerEncoderLayer(
            w, cfg.num_heads, 4 * w, dropout=cfg.dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, cfg.num_layers, enable_nested_tensor=False)
        self.out = nn.Sequential(nn.LayerNorm(w), nn.Linear(w, lm_width))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        if self.pooled:
            pooled = features.mean(dim=1) if features.ndim == 3 else features  # (B, C)
            tokens = self.inp(pooled).view(pooled.shape[0], self.clip_length, -1)  # (B, L, W)
        else:
            tokens = self.inp(features)  # (B, N, W)
        q = self.queries.expand(tokens.shape[0], -1, -1)  # (B, k, W)
        h = self.blocks(torch.cat([tokens, q], dim=1))  # (B, N + k, W)
        return self.out(h[:, tokens.shape[1] :])  # (B, k, D)


def build_mapper(cfg: MapperConfig, feature_dim: int, lm_width: int, features: str) -> nn.Module:
    cfg.check()
    if cfg.type == "mlp":
        return MLPMapper(cfg, feature_dim, lm_width)
    return TransformerMapper(cfg, feature_dim, lm_width, pooled=features == "pooled")
