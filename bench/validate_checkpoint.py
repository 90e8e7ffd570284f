"""Score a training run's latest checkpoint on val, mid-epoch, without touching the run.

    python bench/validate_checkpoint.py --out runs/clipcap-gemma270m --limit 100 [--save DIR] [--set k=v ...]

Long runs (a Gemma-3 adapter epoch takes hours on CPU) validate only at epoch ends. This rebuilds the
run's recipe from its ``config.yaml`` (same features, tokenizer and LM), loads the weights of
``checkpoint/`` (the optimizer state is not needed), decodes the first ``--limit`` val images per
language greedily (``train.val_beams``) and prints JSON: BLEU-4 and CIDEr per language, the
checkpoint's step and the time taken. ``--save`` also writes a model folder that ``polycap.load`` and
``polycap eval`` read.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="the run folder (config.yaml, checkpoint/)")
    ap.add_argument("--limit", type=int, default=100, help="val images per language")
    ap.add_argument("--save", default=None, help="also write a model folder here")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args(argv)

    from safetensors.torch import load_file

    from polycap.train.config import load_config
    from polycap.train.trainer import make_trainer

    run = Path(args.out)
    state = json.loads((run / "checkpoint" / "state.json").read_text())
    cfg = load_config(run / "config.yaml", [*args.overrides, f"data.val_limit={args.limit}"])
    start = time.time()
    recipe = make_trainer(cfg, run, progress=False)
    recipe.load_weights(recipe.model, load_file(str(run / "checkpoint" / "model.safetensors")))
    built = time.time() - start
    val = recipe.validate().log["val"]
    result = {"run": str(run), "global_step": state["global_step"], "epoch": state["epoch"],
              "step_in_epoch": state["step_in_epoch"], "val_images_per_lang": args.limit, "val": val,
              "build_seconds": round(built, 1), "validate_seconds": round(time.time() - start - built, 1)}
    if args.save:
        recipe.save_model(Path(args.save))
        result["saved"] = args.save
    print(json.dumps(result))


if __name__ == "__main__":
    main()
