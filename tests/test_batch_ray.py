"""``polycap batch --engine ray`` on a local Ray cluster: same records as the local engine, and resume.

One cluster (``ray.init(num_cpus=2)``) serves the module; starting it takes several seconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'polycap[ray]')")
pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'polycap[ray]')")

import polycap  # noqa: E402
from polycap.batch import JobConfig, read_records, run_job  # noqa: E402
from polycap.batch.ray_engine import caption_shard, plan_shards, read_ray_records, run_ray_job  # noqa: E402

TINY = "polycap-tiny-random"
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Ray Data's own, at its import


@pytest.fixture(scope="module", autouse=True)
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for i in range(10):
        Image.new("RGB", (30 + i, 24), (i * 25, 90, 40)).save(folder / f"p{i:02d}.png")
    (folder / "zero.png").write_bytes(b"")
    return folder


def _content(recs):
    return sorted(json.dumps({k: v for k, v in r.items() if k != "seconds"}, sort_keys=True) for r in recs)


def _cfg(photos: Path, out: Path, **kw) -> JobConfig:
    return JobConfig(inputs=[str(photos)], model=TINY, device="cpu", langs=["en", "de"], progress="off",
                     jsonl=out / "jsonl", parquet=out / "pq", **kw)  # fmt: skip


def test_ray_records_equal_the_local_engine(photos, tmp_path):
    local = tmp_path / "local.jsonl"
    run_job(JobConfig(inputs=[str(photos)], model=TINY, device="cpu", langs=["en", "de"], progress="off",
                      jsonl=local), polycap.load(TINY, device="cpu"))  # fmt: skip
    summary = run_ray_job(_cfg(photos, tmp_path), actors=2, shard_size=4)
    assert (summary.captioned, summary.failed) == (10, 1)
    assert sorted(p.name for p in (tmp_path / "pq").iterdir()) == [
        f"shard-0000{i}.{ext}" for i in range(3) for ext in ("done", "parquet")
    ]
    want = _content(read_records(local))
    assert _content(read_ray_records(tmp_path / "jsonl")) == want
    assert _content(read_ray_records(tmp_path / "pq")) == want


def test_rerun_after_an_interrupted_run_skips_finished_shards(photos, tmp_path):
    cfg = _cfg(photos, tmp_path)
    shards = plan_shards(cfg, shard_size=4)
    (tmp_path / "jsonl").mkdir()
    (tmp_path / "pq").mkdir()
    cap = polycap.load(TINY, device="cpu")
    caption_shard(cfg, shards[0]["name"], shards[0]["inputs"], cap)  # the run finished shard 0 ...
    first = (tmp_path / "pq" / "shard-00000.parquet").stat().st_mtime_ns
    run_job(JobConfig(**{**cfg.__dict__, "inputs": shards[1]["inputs"][:2], "parquet": None,
                         "jsonl": tmp_path / "jsonl" / ".shard-00001.partial.jsonl"}), cap)  # ... and half of 1
    summary = run_ray_job(cfg, actors=1, shard_size=4)
    assert (tmp_path / "pq" / "shard-00000.parquet").stat().st_mtime_ns == first
    # shard 0 skipped whole, shard 1's two finished images not redone
    assert (summary.already_done, summary.captioned, summary.failed) == (6, 4, 1)
    recs = read_ray_records(tmp_path / "jsonl")
    keys = [(r["id"], r["lang"]) for r in recs]
    assert len(keys) == len(set(keys)) == 22
    again = run_ray_job(cfg, actors=1, shard_size=4)
    assert again.captioned == 0 and again.already_done == 11
