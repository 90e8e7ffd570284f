"""Time polycap's cross-entropy training step with random batches and with length buckets, side by side.

    python bench/train_step.py --set data.cache_dir=/work/cache/features --windows 0,50 --steps 30

Builds the real recipe of ``--config`` (full train split, features from the feature cache), then
for each ``train.bucket_window`` in ``--windows`` draws the epoch's batches exactly as training does
and times ``--steps`` steps on batches spread over the epoch, the windows taking turns (A B A B ...)
so drifting machine load hits each alike. The step is ``polycap.train.engine.train_step``, the one
``fit()`` runs: the first phase's loss under its autocast setting, backward, clipping, AdamW, the
schedule and the moving average (``train.ema``). Prints JSON: seconds per step (median and mean),
the share of computed token positions that are padding, and the estimated epoch time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default=str(ROOT / "configs" / "polycap-base.yaml"))
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--windows", default="0,50", help="bucket_window values to compare")
    ap.add_argument("--steps", type=int, default=30, help="timed steps per window")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    import torch

    from polycap.train.config import load_config
    from polycap.train.engine import make_ema, make_optimizer, train_step
    from polycap.train.trainer import make_trainer

    torch.set_num_threads(args.threads)
    cfg = load_config(args.config, args.overrides)
    recipe = make_trainer(cfg, Path(tempfile.mkdtemp(prefix="train-step-")), progress=False)
    phase = recipe.phases()[0]
    opt, sched = make_optimizer(recipe, phase)
    ema = make_ema(recipe.model, phase.ema)
    windows = [int(w) for w in args.windows.split(",")]
    plans, stats = {}, {}
    for w in windows:
        batches = recipe.epoch_plan(0, window=w)
        padded = real = 0
        for b in batches:
            lens = [len(c) for u in b for c in u.captions]
            padded, real = padded + len(lens) * max(lens), real + sum(lens)
        pick = [batches[i * len(batches) // args.steps] for i in range(args.steps)]
        plans[w] = pick
        stats[w] = {"batches": len(batches), "padding_share": round(1 - real / padded, 3), "times": []}

    def step(units) -> float:
        start = time.perf_counter()
        train_step(recipe.model, phase, units, opt, sched, ema, recipe.device_type)
        return time.perf_counter() - start

    recipe.model.train()
    for w in windows:  # warm-up
        step(plans[w][0])
    for i in range(args.steps):
        for w in windows:
            stats[w]["times"].append(step(plans[w][i]))
    out = {"threads": args.threads, "captions_per_step": cfg.train.batch_size, "windows": {}}
    for w, s in stats.items():
        t = s.pop("times")
        s.update(seconds_per_step_median=round(statistics.median(t), 3),
                 seconds_per_step_mean=round(statistics.mean(t), 3),
                 epoch_minutes=round(s["batches"] * statistics.mean(t) / 60, 1))
        out["windows"][str(w)] = s
    print(json.dumps(out))


if __name__ == "__main__":
    sys.exit(main())
