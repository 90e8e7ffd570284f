"""Nearest-neighbour retrieval baseline on the val split; prints the report JSON (polycap eval's keys).

python bench/nn_baseline.py --config configs/polycap-base.yaml --out runs/nn-baseline.json
Uses the same feature cache as ``polycap train``, so after training it costs seconds.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from polycap.backends.encoders import build_encoder
from polycap.data.features import FeatureCache
from polycap.data.manifest import ManifestItem
from polycap.eval.evaluate import build_report
from polycap.train.config import load_config
from polycap.train.feature_recipe import load_split


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", default="configs/polycap-base.yaml")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--out", type=Path, help="also write the report here")
    ap.add_argument("--preds", type=Path, help="write predictions (JSON Lines)")
    args = ap.parse_args()
    cfg = load_config(args.config, args.overrides)
    cache = FeatureCache(Path(cfg.data.cache_dir).expanduser(), build_encoder(cfg.model.encoder))
    train = load_split(cfg, cache, cfg.data.train_split, progress=True)
    val = load_split(cfg, cache, cfg.data.val_split, progress=True)
    langs = cfg.data.langs or sorted({k for it in train.items for k in it.captions})
    start = time.perf_counter()
    preds = nearest_neighbour_captions(train.items, train.features, val.items, val.features, langs)
    seconds = time.perf_counter() - start
    n = sum(len(p) for p in preds.values())
    meta = {"model": "nearest-neighbour (pooled EfficientNet-Lite2, cosine)", "data": ",".join(cfg.data.manifests),
            "split": cfg.data.val_split, "options": {},
            "speed": {"images_per_s": n / seconds, "ms_per_image": 1000 * seconds / n}}
    report = build_report(val.items, preds, langs, None, meta)
    if args.preds:
        with args.preds.open("w", encoding="utf-8") as f:
            for lang, p in preds.items():
                for key, text in p.items():
                    f.write(json.dumps({"image": key, "lang": lang, "caption": text}, ensure_ascii=False) + "\n")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(report, ensure_ascii=False))


if __name__ == "__main__":
    main()
