"""Batch captioning speed: ``polycap caption`` vs ``polycap batch`` (local, Ray) on small and large photos; JSON.

    python bench/batch.py                        # 1,000 Flickr8k val photos + 200 4000x3000 JPEGs, polycap-base
    python bench/batch.py --small 200 --large 50 # a reduced run
    python bench/batch.py --no-ray               # without the Ray engine

How it measures, and why:

* Every command runs as a real subprocess (``python -m polycap ...``), end to end, the way a
  user runs it; wall time and the child's peak RSS (``os.wait4``) are recorded. Model loading and
  imports are part of what a user waits for, so ``images_per_s`` is images / wall seconds; the
  startup alone (the same command on one image) is reported too, with ``steady_images_per_s``
  = (n - 1) / (wall - startup). Peak RSS is the command's own process: Ray's actors are other
  processes and are not in it.
* ``caption`` is today's path (``polycap caption DIR -f jsonl -o FILE``); ``batch`` is
  ``polycap batch DIR -o FILE`` (prefetch threads, draft JPEG decoding); ``batch_ray`` is
  ``--engine ray --actors 2`` on a local Ray cluster the command starts; ``batch_rerun`` runs the
  finished local job again (it should only check the output, not caption).
* The large photos are Flickr8k photos upscaled to 4000x3000 (12 MP) JPEGs, written to a temporary
  folder, so decoding dominates as it does for camera photos.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "flickr8k"


def val_photos(n: int) -> list[Path]:
    """The first ``n`` val photos of Flickr8k, in manifest order."""
    out = []
    with (DATA / "captions.jsonl").open() as f:
        for line in f:
            rec = json.loads(line)
            if rec.get("split") == "val":
                out.append(DATA / rec["image"])
                if len(out) == n:
                    break
    return out


def link_folder(paths: list[Path], folder: Path) -> Path:
    folder.mkdir(parents=True)
    for p in paths:
        os.symlink(p, folder / p.name)
    return folder


def large_folder(paths: list[Path], folder: Path) -> Path:
    folder.mkdir(parents=True)
    for p in paths:
        with Image.open(p) as im:
            im.convert("RGB").resize((4000, 3000), Image.Resampling.BICUBIC).save(folder / p.name, quality=90)
    return folder


def timed(cmd: list[str]) -> dict:
    """Run ``cmd``; wall seconds, peak RSS (MB) and exit code."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    out, err = proc.stdout.read().decode(), proc.stderr.read().decode()
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1):
        raise SystemExit(f"{' '.join(cmd)} failed ({code}):\n{err[-2000:]}")
    return {"wall_s": round(wall, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024), "exit": code, "stdout": out}


def commands(name: str, src: Path, out: Path, model: str, batch_size: int) -> list[str]:
    py = [sys.executable, "-m", "polycap"]
    common = ["-m", model, "--batch-size", str(batch_size), "-q"]
    if name == "caption":
        return [*py, "caption", str(src), "-f", "jsonl", "-o", str(out / "caption.jsonl"), "--overwrite", *common]
    if name in ("batch", "batch_rerun"):
        return [*py, "batch", str(src), "-o", str(out / "batch.jsonl"), *common]
    return [*py, "batch", str(src), "--engine", "ray", "--actors", "2", "-o", str(out / "ray"), *common]


def run_set(label: str, src: Path, n: int, work: Path, args) -> dict:
    one = work / f"{label}-one"
    one.mkdir()
    first = sorted(src.iterdir())[0]
    os.symlink(first.resolve(), one / first.name)
    names = ["caption", "batch", "batch_rerun"] + ([] if args.no_ray else ["batch_ray"])
    result = {"images": n}
    for name in names:
        out = work / f"{label}-{name}"
        out.mkdir()
        if name == "batch_rerun":
            out = work / f"{label}-batch"
        row = timed(commands(name, src, out, args.model, args.batch_size))
        if name != "batch_rerun":
            start_out = work / f"{label}-{name}-one"
            start_out.mkdir()
            startup = timed(commands(name, one, start_out, args.model, args.batch_size))["wall_s"]
            row["startup_s"] = startup
            busy = row["wall_s"] - startup
            row["steady_images_per_s"] = round((n - 1) / busy, 2) if busy >= 1.0 else None  # else: noise
        row["images_per_s"] = round(n / row["wall_s"], 2)
        if name.startswith("batch"):
            row["summary"] = json.loads(row["stdout"].strip().splitlines()[-1])
        del row["stdout"]
        result[name] = row
        print(f"{label} {name}: {row['wall_s']} s", file=sys.stderr, flush=True)
    cap, bat = result["caption"], result["batch"]
    result["speedup_batch_vs_caption"] = round(cap["wall_s"] / bat["wall_s"], 2)
    if bat["steady_images_per_s"] and cap["steady_images_per_s"]:
        result["steady_speedup_batch_vs_caption"] = round(bat["steady_images_per_s"] / cap["steady_images_per_s"], 2)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", type=int, default=1000, help="Flickr8k val photos")
    ap.add_argument("--large", type=int, default=200, help="4000x3000 JPEGs made from val photos")
    ap.add_argument("--model", default="polycap-base")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--no-ray", action="store_true")
    args = ap.parse_args()
    if not (DATA / "captions.jsonl").is_file():
        raise SystemExit(f"Flickr8k not found at {DATA}")
    work = Path(tempfile.mkdtemp(prefix="polycap-bench-batch-"))
    try:
        photos = val_photos(max(args.small, args.large))
        report = {"model": args.model, "batch_size": args.batch_size, "cpus": os.cpu_count(),
                  "load_before": os.getloadavg()[0]}  # fmt: skip
        if args.small:
            small = link_folder(photos[: args.small], work / "small")
            report["small"] = run_set("small", small, args.small, work, args)
        if args.large:
            big = large_folder(photos[: args.large], work / "large")
            report["large"] = run_set("large", big, args.large, work, args)
        report["load_after"] = os.getloadavg()[0]
        print(json.dumps(report, indent=2))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
