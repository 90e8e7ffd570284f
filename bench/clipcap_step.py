"""Time one training step of a clipcap adapter (the step ``fit()`` runs) and estimate an epoch.

    nice -n 10 python bench/clipcap_step.py --config configs/clipcap-gemma270m.yaml --threads 2 \
        --set data.cache_dir=/tmp/cache --images 16

Builds a small manifest of ``--images`` train images (+ 4 val) of Flickr8k, the clipcap recipe on it
(features from the feature cache), times ``--steps`` steps (``polycap.train.engine.train_step`` on
batches drawn as the first epoch draws them) after one warm-up step and prints
JSON: seconds per step, captions per step, mean caption tokens, and the estimated time of one epoch
over the full train split of each language in ``data.langs``. With ``clipcap.output_vocab=captions`` the
output vocabulary is that of the full train split's captions, as in a real run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLICKR = ROOT.parent / "shared" / "data" / "flickr8k"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=str(ROOT / "configs" / "clipcap-gemma270m.yaml"))
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--manifest", default=str(FLICKR / "captions.jsonl"))
    args = ap.parse_args(argv)

    import torch

    from polycap.data.manifest import write_subset
    from polycap.train.config import load_config
    from polycap.train.trainer import make_trainer

    torch.set_num_threads(args.threads)
    lines = [json.loads(x) for x in Path(args.manifest).read_text(encoding="utf-8").splitlines()]
    tmp = Path(tempfile.mkdtemp(prefix="clipcap-step-"))
    small = write_subset(args.manifest, tmp / "m.jsonl", {"train": args.images, "val": 4})
    cfg = load_config(args.config, [*args.overrides, f"data.manifests=[{small}]"])
    start = time.perf_counter()
    recipe = make_trainer(cfg, tmp / "run", progress=False)
    load_s = time.perf_counter() - start
    train = [x for x in lines if x["split"] == "train"]
    if cfg.clipcap.output_vocab == "captions":  # the vocabulary of the full train split, as a real run has
        m = recipe.model
        m.set_output_vocab({lang: {i for x in train for t in x["captions"].get(lang, []) if t.strip()
                                   for i in m.encode_caption(t, lang)[1:]} for lang in recipe.langs})
    sec = step_seconds(recipe, steps=args.steps)
    per_step = cfg.train.batch_size
    lens = [len(ids) - 1 for _, ids in recipe.pool]  # caption tokens + eos (the lang index is not a token)
    full = {lang: sum(len(x["captions"].get(lang, [])) for x in train) for lang in recipe.langs}
    out = {
        "lm": asdict(cfg.clipcap.lm), "mode": cfg.clipcap.mode, "mapper": asdict(cfg.clipcap.mapper),
        "threads": args.threads, "load_seconds": round(load_s, 1),
        "trainable_params": sum(p.numel() for p in recipe.model.parameters() if p.requires_grad),
        "seconds_per_step": round(sec, 3), "captions_per_step": per_step,
        "prefix_length": recipe.ccfg.mapper.prefix_length,
        "output_vocab": None if recipe.model.output_vocab is None else len(recipe.model.output_vocab),
        "mean_caption_tokens": round(sum(lens) / len(lens), 1),
        "train_captions": full,
        "epoch_hours": {k: round(v / per_step * sec / 3600, 2) for k, v in full.items()},
    }
    print(json.dumps(out))


def step_seconds(recipe, steps: int = 5, warmup: int = 1) -> float:
    """Mean wall time of ``fit()``'s step on the first batches of epoch 0 (after ``warmup`` untimed ones)."""
    from polycap.train.engine import make_ema, make_optimizer, train_step

    phase = recipe.phases()[0]
    batches = phase.batches(0)
    opt, sched = make_optimizer(recipe, phase, len(batches))
    ema = make_ema(recipe.model, phase.ema)
    recipe.model.train()
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        train_step(recipe.model, phase, batches[i % len(batches)], opt, sched, ema, recipe.device_type)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return sum(times) / len(times)


if __name__ == "__main__":
    sys.exit(main())
