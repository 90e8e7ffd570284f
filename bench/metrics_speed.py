"""Speed of polycap.eval.metrics.score on 5,000 predictions x 5 references; prints JSON.

python bench/metrics_speed.py [--data ../shared/data/flickr8k/captions.jsonl] [--meteor]

Captions are real Flickr8k English captions sampled with a fixed seed (references: 5 distinct
captions per synthetic image; prediction: another caption), so tokenisation sees realistic
text.  Each metric is timed alone (tokenisation included), then all metrics but METEOR together
-- the number the 5 s budget is about.  METEOR (a Java jar) is timed only with --meteor.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

from polycap.data.manifest import read_manifest
from polycap.eval.metrics import METRICS, score
from polycap.eval.metrics.ptb import compiled_rules
from polycap.eval.metrics.tokenize import tokenize_batch

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "flickr8k" / "captions.jsonl"


def _timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one call: CPU time is the steadier number on a busy box."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--refs", type=int, default=5)
    ap.add_argument("--meteor", action="store_true", help="also time METEOR (Java)")
    args = ap.parse_args()
    caps = [c for it in read_manifest(args.data, langs=["en"]) for c in it.captions["en"]]
    rng = random.Random(0)
    refs = {f"img{i}": rng.sample(caps, args.refs) for i in range(args.n)}
    preds = {k: rng.choice(caps) for k in refs}

    seconds, cpu = {}, {}
    seconds["ptb_rules_compile"], cpu["ptb_rules_compile"] = _timed(compiled_rules)  # once per process
    flat = [r for rs in refs.values() for r in rs] + list(preds.values())
    seconds["tokenize"], cpu["tokenize"] = _timed(lambda: tokenize_batch(flat, "en"))
    timed = [m for m in METRICS if m != "METEOR" or args.meteor]
    for m in ("BLEU", *[m for m in timed if not m.startswith("BLEU")]):
        seconds[m], cpu[m] = _timed(lambda m=m: score(refs, preds, metrics=[m]))
    others = [m for m in METRICS if m != "METEOR"]
    seconds["total_excluding_meteor"], cpu["total_excluding_meteor"] = _timed(
        lambda: score(refs, preds, metrics=others)
    )
    out = {
        "n": args.n,
        "refs_per_image": args.refs,
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "cpu_seconds": {k: round(v, 3) for k, v in cpu.items()},
        "note": "each metric timed alone, tokenisation included; BLEU is BLEU-1..4 together",
        "load_average_1min": round(os.getloadavg()[0], 2),
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
