"""Compute EfficientNet-Lite2 features of every image in a caption manifest into a FeatureCache.

    PYTHONPATH=src python bench/extract_features.py \\
        --manifest ../shared/data/flickr8k/captions.jsonl --cache-dir /work/cache/features

Resumable: a rerun (or a run after a kill) computes only the images not cached yet. Prints one JSON
line with the counts and the measured encoding rate at the end.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """Parse options, run FeatureCache.ensure over the manifest, print a JSON summary."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--manifest", type=Path, default=Path("/work/shared/data/flickr8k/captions.jsonl"))
    p.add_argument("--cache-dir", type=Path, default=Path("/work/cache/features"))
    p.add_argument("--split", default=None, help="only this split (default: all)")
    p.add_argument("--flip", action="store_true", help="also cache the mirrored view of each image")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--runtime", default="auto", help="auto (onnxruntime when installed), torch or onnx")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)

    import torch

    from polycap.backends.encoders.efficientnet import EfficientNetLite2Encoder
    from polycap.data.features import FeatureCache
    from polycap.data.manifest import read_manifest

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    paths = [item.image for item in read_manifest(args.manifest, split=args.split)]
    from polycap.runtime.onnx import OnnxEncoder, fast_encoder

    encoder = fast_encoder(EfficientNetLite2Encoder.from_pretrained(), args.runtime)
    cache = FeatureCache(args.cache_dir, encoder)
    before = len(cache)
    start = time.perf_counter()
    cache.ensure(paths, flip=args.flip, batch_size=args.batch_size, progress=not args.no_progress)
    seconds = time.perf_counter() - start
    computed = len(cache) - before
    summary = {
        "images": len(paths),
        "computed": computed,
        "failed": len(cache.failed),
        "cached_total": len(cache),
        "seconds": round(seconds, 1),
        "images_per_s": round(computed / seconds, 2) if computed else None,
        "batch_size": args.batch_size,
        "threads": args.threads,
        "runtime": "onnx" if isinstance(encoder, OnnxEncoder) else "torch",
        "cache": str(cache.root),
    }
    print(json.dumps(summary), flush=True)
    return 1 if cache.failed else 0


if __name__ == "__main__":
    sys.exit(main())
