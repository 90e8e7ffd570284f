"""polycap's two runtimes (torch, onnx) side by side in one process, interleaved; JSON.

    python bench/runtime.py                       # polycap-base, 40 rounds
    python bench/runtime.py --model PATH --rounds 20

``bench/speed.py`` runs each model in its own process, one after the other; on a machine whose speed
drifts from minute to minute (a shared host) two such processes can differ by 1.5x for the same
code. Here one process holds the model on both runtimes and, in every round, times each part once
on each runtime in turn, so drift hits both alike. The median and the best over the rounds are
reported for:

* ``encoder_b1``: one photo's preprocessed pixels through the image encoder;
* ``decode_b1_20_tokens``: ``generate()`` from one photo's features, 20 forced new tokens, greedy;
* ``caption_b1_greedy``: ``caption_batch`` on one decoded photo end to end (20 forced tokens), the
  number bench/speed.py's headline measures;
* ``caption_b32_greedy_per_image``: the same for 32 photos, per image (every 4th round only).

Both runtimes must write the same captions; the script checks it and says so in the output.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="polycap-base", help="registered name or model folder (native)")
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2, help="torch and onnxruntime threads (default 2)")
    args = ap.parse_args(argv)

    import torch
    from PIL import Image

    import polycap
    from polycap.types import GenerationOptions

    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    caps = {rt: polycap.load(args.model, device="cpu", runtime=rt) for rt in ("torch", "onnx")}
    if caps["onnx"].runtime != "onnx":
        raise SystemExit("the onnx runtime is not available here (pip install 'polycap[onnx]')")
    photos = [Image.open(p).convert("RGB") for p in sorted((ROOT / "examples").glob("*.jpg"))]
    one, batch = photos[:1], [photos[i % len(photos)] for i in range(32)]
    forced = GenerationOptions(lang=caps["torch"].default_lang, num_beams=1, min_new_tokens=20, max_new_tokens=20)

    def parts(cap):
        pixels = cap.encoder.preprocess(one)
        with torch.inference_mode():
            features = cap.encoder(pixels)
        lang = torch.full((1,), cap.tokenizer.lang_id(forced.lang))
        kw = {"max_new_tokens": 20, "min_new_tokens": 20, "num_beams": 1, "do_sample": False}

        def encode():
            with torch.inference_mode():
                cap.encoder(pixels)

        def decode():
            with torch.inference_mode():
                cap.model.generate(features, lang, decoder=cap.generator, **kw)

        return {
            "encoder_b1": encode,
            "decode_b1_20_tokens": decode,
            "caption_b1_greedy": lambda: cap.caption_batch(one, forced),
        }

    jobs = {rt: parts(cap) for rt, cap in caps.items()}
    samples: dict[str, dict[str, list[float]]] = {rt: {} for rt in caps}
    for fns in jobs.values():  # warm-up
        for fn in fns.values():
            fn()
    for r in range(args.rounds):
        for name in jobs["torch"]:
            for rt in (("torch", "onnx") if r % 2 == 0 else ("onnx", "torch")):
                t = time.perf_counter()
                jobs[rt][name]()
                samples[rt].setdefault(name, []).append(1000 * (time.perf_counter() - t))
        if r % 4 == 0:
            for rt in caps:
                t = time.perf_counter()
                caps[rt].caption_batch(batch, forced)
                samples[rt].setdefault("caption_b32_greedy_per_image", []).append(
                    1000 * (time.perf_counter() - t) / len(batch)
                )

    default = caps["torch"].make_options(lang=caps["torch"].default_lang)
    texts = {rt: [c.text for c in cap.caption_batch(photos, default)] for rt, cap in caps.items()}
    out = {
        "model": args.model,
        "threads": args.threads,
        "rounds": args.rounds,
        "cpu_count": os.cpu_count(),
        "ms": {
            rt: {k: {"median": round(statistics.median(v), 1), "best": round(min(v), 1)} for k, v in s.items()}
            for rt, s in samples.items()
        },
        "speedup_onnx_vs_torch": {
            k: round(statistics.median(samples["torch"][k]) / statistics.median(samples["onnx"][k]), 2)
            for k in samples["torch"]
        },
        "same_captions": texts["torch"] == texts["onnx"],
        "wall_s": round(time.perf_counter() - start, 1),
        "command": " ".join(["python", "bench/runtime.py", *(argv if argv is not None else sys.argv[1:])]),
    }
    print(json.dumps(out, indent=1))
    return out


if __name__ == "__main__":
    main()
