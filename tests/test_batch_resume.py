"""Kill ``polycap batch`` with SIGKILL at random points; reruns must finish the job exactly.

A separate process running the command over a few hundred generated images writes JSON Lines,
Parquet parts and sidecar files with ``--existing append`` (where a caption written twice would
show), and is killed at several random points. The processes come from a forkserver that imported
torch once (a fresh ``python -m polycap`` spends ~5 s importing it): each is a real process
running ``polycap.cli.main``, killed with a real SIGKILL. The union of what the runs left must
equal a clean run's: every image once per language, no duplicate, no gap, no torn line, and
every sidecar whole with one caption.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

import polycap
from polycap.batch import JobConfig, read_records, run_job

N_IMAGES = 200
LANGS = ["en", "de"]
try:
    import pyexiv2  # noqa: F401

    HAS_XMP = True
except ImportError:
    HAS_XMP = False


def _command(folder: Path, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "polycap", "batch", str(folder), "-m", "polycap-tiny-random", "--device", "cpu",
        "-l", ",".join(LANGS), "-o", str(out / "o.jsonl"), "--parquet", str(out / "pq"), "--flush-every", "16",
        "--sidecar", "--existing", "append", "--prefix", "ohwx, ", "--batch-size", "4", "--max-tokens", "12",
        "--progress", "off", *(["--xmp", "sidecar"] if HAS_XMP else []),
    ]  # fmt: skip


def _lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _cli(argv: list[str], stdout: str = os.devnull) -> None:
    """The child: ``polycap <argv>``, stdout to ``stdout``, exiting with the command's code."""
    os.dup2(os.open(stdout, os.O_WRONLY | os.O_CREAT), 1)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
    from polycap.cli import main

    os._exit(main(argv))


def _kill_after(cmd: list[str], out: Path, lines: int, stdout: str = os.devnull) -> int:
    """Start the job, SIGKILL it once the JSONL has ``lines`` lines (or it ended); the exit code."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["torch", "polycap.cli", "polycap.batch", "polycap.backends.native.backend"])
    proc = ctx.Process(target=_cli, args=(cmd[3:], stdout))
    proc.start()
    deadline = time.monotonic() + 60
    while proc.is_alive() and _lines(out / "o.jsonl") < lines and time.monotonic() < deadline:
        time.sleep(0.005)
    if proc.is_alive():
        proc.kill()  # SIGKILL
    proc.join()
    return proc.exitcode


@pytest.mark.slow
def test_sigkill_at_random_points_then_rerun_is_exact(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(N_IMAGES):
        Image.new("RGB", (24 + i % 5, 20), (i % 256, (i * 7) % 256, 40)).save(folder / f"p{i:03d}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    out = tmp_path / "out"
    out.mkdir()
    cmd = _command(folder, out)
    rng = random.Random(20)
    total = (N_IMAGES + 1) * len(LANGS)
    points = sorted(rng.sample(range(1, total - 60), 3))
    codes = [_kill_after(cmd, out, pts) for pts in points]
    assert codes == [-signal.SIGKILL] * 3, codes  # the runs were really killed mid-job
    log = tmp_path / "final.json"
    assert _kill_after(cmd, out, total + 1, str(log)) == 1  # ran to the end; broken.png failed
    summary = json.loads(log.read_text().strip().splitlines()[-1])
    assert summary["skipped"]["done_before"] > 0

    # the clean reference, in process
    clean = tmp_path / "clean"
    cap = polycap.load("polycap-tiny-random", device="cpu")
    run_job(JobConfig(inputs=[str(folder)], langs=LANGS, jsonl=clean / "o.jsonl", progress="off",
                      options={"max_new_tokens": 12}, state_dir=clean / "state"), cap)  # fmt: skip
    ref = {(r["id"], r["lang"]): (r["caption"], r["error"]) for r in read_records(clean / "o.jsonl")}

    raw = (out / "o.jsonl").read_bytes()
    assert raw.endswith(b"\n") and all(json.loads(line) for line in raw.splitlines())
    for recs in (read_records(out / "o.jsonl"), read_records(out / "pq")):
        keys = [(r["id"], r["lang"]) for r in recs]
        assert len(keys) == len(set(keys)) == total  # no duplicates, no gaps
        assert {(r["id"], r["lang"]): (r["caption"], r["error"]) for r in recs} == ref
    for (image, lang), (caption, error) in ref.items():
        side = Path(image).with_name(f"{Path(image).stem}.{lang}.txt")
        if error:
            assert not side.exists()
        else:
            assert side.read_text() == f"ohwx, {caption}"  # whole, and appended exactly once
    assert sorted(tmp_path.rglob("*.polycap-tmp")) == []  # what a kill left mid-write, the next run removed
    if HAS_XMP:
        from polycap.batch.sidecars import read_alt_text

        for image in {i for i, _ in ref}:
            if not ref[(image, "en")][1]:
                alt = read_alt_text(Path(image).with_suffix(".xmp"))["Xmp.iptc.AltTextAccessibility"]
                assert alt == {"x-default": ref[(image, "en")][0], **{lg: ref[(image, lg)][0] for lg in LANGS}}
