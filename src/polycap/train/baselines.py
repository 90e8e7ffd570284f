"""Baselines that polycap-base must beat: nearest-neighbour caption retrieval (and the LSTM decoder,
which is ``model.arch=lstm`` of the same trainer)."""

from __future__ import annotations

import torch

from polycap.data.manifest import ManifestItem


def pooled(features: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    """(n, N, C) grids -> (n, C) L2-normalised mean vectors, in chunks to bound memory."""
    out = [features[i : i + chunk].float().mean(1) for i in range(0, len(features), chunk)]
    return torch.nn.functional.normalize(torch.cat(out), dim=-1)


def nearest_neighbour_captions(
    train_items: list[ManifestItem],
    train_features: torch.Tensor,
    query_items: list[ManifestItem],
    query_features: torch.Tensor,
    langs: list[str],
) -> dict[str, dict[str, str]]:
    """For each query image and language: the first caption of the most similar training image
    (cosine similarity of pooled encoder features) among those with a caption in that language."""
    sims = pooled(query_features) @ pooled(train_features).T  # (q, n)
    out: dict[str, dict[str, str]] = {}
    for lang in langs:
        has = torch.tensor([bool(it.captions.get(lang)) for it in train_items])
        if not has.any():
            continue
        best = sims.masked_fill(~has[None, :], float("-inf")).argmax(1).tolist()
        out[lang] = {q.key: train_items[j].captions[lang][0] for q, j in zip(query_items, best)}
    return out
