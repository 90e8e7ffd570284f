"""``polycap batch --engine ray`` on a local Ray cluster: the local engine's records and outputs, resume, retry.

One cluster (``ray.init(num_cpus=2)``) serves the module; starting it takes several seconds.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest
from PIL import Image

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'polycap[ray]')")
pytest.importorskip("ray.data", reason="Ray Data is not installed (pip install 'polycap[ray]')")

import polycap  # noqa: E402
from polycap.batch import JobConfig, SidecarSpec, read_records, run_job  # noqa: E402
from polycap.batch.ray_engine import caption_shard, plan_shards, read_ray_records, run_ray_job  # noqa: E402

TINY = "polycap-tiny-random"
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Ray Data's own, at its import


@pytest.fixture(scope="module", autouse=True)
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def tiny():
    return polycap.load(TINY, device="cpu")


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
    kw.setdefault("jsonl", out / "jsonl")
    kw.setdefault("parquet", out / "pq")
    kw.setdefault("langs", ["en", "de"])
    return JobConfig(inputs=[str(photos)], model=TINY, device="cpu", progress="off", **kw)


def _coco(path: Path) -> list:
    return sorted(json.loads(path.read_text()), key=lambda x: str(x["image_id"]))


def test_ray_records_and_coco_equal_the_local_engine(photos, tmp_path, tiny):
    local = _cfg(photos, tmp_path, jsonl=tmp_path / "local.jsonl", parquet=None, coco=tmp_path / "local.json")
    run_job(local, tiny)
    summary = run_ray_job(_cfg(photos, tmp_path, coco=tmp_path / "ray.json"), actors=2, shard_size=4)
    assert (summary.captioned, summary.failed) == (10, 1)
    assert sorted(p.name for p in (tmp_path / "pq").iterdir()) == [
        f"shard-0000{i}.{ext}" for i in range(3) for ext in ("done", "parquet")
    ]
    want = _content(read_records(tmp_path / "local.jsonl"))
    assert _content(read_ray_records(tmp_path / "jsonl")) == want
    assert _content(read_ray_records(tmp_path / "pq")) == want
    for lang in ("en", "de"):  # the COCO results the driver wrote from the shard records
        assert _coco(tmp_path / f"ray.{lang}.json") == _coco(tmp_path / f"local.{lang}.json")
        assert len(_coco(tmp_path / f"ray.{lang}.json")) == 10


def test_sidecars_and_xmp_beside_the_images_then_retry_failed(photos, tmp_path):
    folder = tmp_path / "photos"
    shutil.copytree(photos, folder)
    has_xmp = _has_pyexiv2()
    cfg = _cfg(folder, tmp_path, jsonl=None, parquet=None, sidecar=SidecarSpec(prefix="ohwx, "),
               xmp="sidecar" if has_xmp else None)  # fmt: skip
    s = run_ray_job(cfg, actors=2, shard_size=4)
    assert (s.captioned, s.failed) == (10, 1)
    records = folder / ".polycap-batch" / "ray-records"  # no --out: the shard records live in the state folder
    caps = {(Path(r["id"]).stem, r["lang"]): r["caption"] for r in read_ray_records(records)}
    for i in range(10):
        for lang in ("en", "de"):
            assert (folder / f"p{i:02d}.{lang}.txt").read_text() == f"ohwx, {caps[(f'p{i:02d}', lang)]}"
    assert not (folder / "zero.en.txt").exists()
    if has_xmp:
        from polycap.batch.sidecars import read_alt_text

        alt = read_alt_text(folder / "p03.xmp")["Xmp.iptc.AltTextAccessibility"]
        assert alt == {"x-default": caps[("p03", "en")], "en": caps[("p03", "en")], "de": caps[("p03", "de")]}
    untouched = (records / "shard-00000.jsonl").stat().st_mtime_ns

    (folder / "zero.png").write_bytes((folder / "p00.png").read_bytes())  # the user fixed the broken file
    plain = run_ray_job(cfg, actors=1, shard_size=4)
    assert (plain.captioned, plain.failed_before, plain.already_done) == (0, 1, 10)
    retry = run_ray_job(JobConfig(**{**cfg.__dict__, "retry_failed": True}), actors=1, shard_size=4)
    assert (retry.captioned, retry.failed, retry.already_done) == (1, 0, 10)
    recs = read_ray_records(records)
    assert len(recs) == 22 and not any(r["error"] for r in recs)
    assert len({(r["id"], r["lang"]) for r in recs}) == 22
    assert (records / "shard-00000.jsonl").stat().st_mtime_ns == untouched  # only the shard that had a failure
    zero_de = next(r["caption"] for r in recs if r["id"].endswith("zero.png") and r["lang"] == "de")
    assert (folder / "zero.de.txt").read_text() == f"ohwx, {zero_de}"


def _has_pyexiv2() -> bool:
    try:
        import pyexiv2  # noqa: F401
    except ImportError:
        return False
    return True


def test_rerun_after_an_interrupted_run_skips_finished_shards(photos, tmp_path, tiny):
    cfg = _cfg(photos, tmp_path)
    shards = plan_shards(cfg, shard_size=4)
    (tmp_path / "jsonl").mkdir()
    (tmp_path / "pq").mkdir()
    caption_shard(cfg, shards[0]["name"], shards[0]["inputs"], tiny)  # the run finished shard 0 ...
    first = (tmp_path / "pq" / "shard-00000.parquet").stat().st_mtime_ns
    run_job(JobConfig(**{**cfg.__dict__, "inputs": shards[1]["inputs"][:2], "parquet": None,
                         "jsonl": tmp_path / "jsonl" / ".shard-00001.partial.jsonl"}), tiny)  # ... and half of 1
    stale = tmp_path / "pq" / ".shard-00001.parquet.99999.polycap-tmp"  # ... when a kill hit its parquet write
    stale.write_bytes(b"PAR1 half")
    summary = run_ray_job(cfg, actors=1, shard_size=4)
    assert (tmp_path / "pq" / "shard-00000.parquet").stat().st_mtime_ns == first
    assert not stale.exists()
    # shard 0 skipped whole, shard 1's two finished images not redone; zero.png's failure is new
    assert (summary.already_done, summary.captioned, summary.failed) == (6, 4, 1)
    recs = read_ray_records(tmp_path / "jsonl")
    keys = [(r["id"], r["lang"]) for r in recs]
    assert len(keys) == len(set(keys)) == 22
    again = run_ray_job(cfg, actors=1, shard_size=4)
    assert (again.captioned, again.already_done, again.failed_before) == (0, 10, 1)
    # an output added to a finished job is written from the shard records: nothing is captioned again
    coco = run_ray_job(_cfg(photos, tmp_path, coco=tmp_path / "c.json"), actors=1, shard_size=4)
    assert coco.captioned == 0 and len(json.loads((tmp_path / "c.en.json").read_text())) == 10


def test_existing_skip_images_are_not_captioned_on_ray(photos, tmp_path, monkeypatch):
    import polycap.batch.engine

    def no_model(cfg):
        raise AssertionError("the driver loaded a model")

    monkeypatch.setattr(polycap.batch.engine, "load_captioner", no_model)  # the actors load theirs
    folder = tmp_path / "photos"
    shutil.copytree(photos, folder)
    mine = [0, 1, 2, 3, 5]  # all of shard 0 (p00-p03) and p05 of shard 1 have the user's own caption
    for i in mine:
        (folder / f"p{i:02d}.txt").write_text("mine")
    cfg = _cfg(folder, tmp_path, jsonl=None, parquet=None, langs=["en"], sidecar=SidecarSpec())
    s = run_ray_job(cfg, actors=1, shard_size=4)
    assert (s.captioned, s.failed, s.existing, s.total) == (5, 1, 5, 11)
    records = folder / ".polycap-batch" / "ray-records"
    names = sorted(Path(r["id"]).name for r in read_ray_records(records))
    assert names == ["p04.png", "p06.png", "p07.png", "p08.png", "p09.png", "zero.png"]
    assert read_records(records / "shard-00000.jsonl") == []  # nothing to caption: finished on the driver
    assert all((folder / f"p{i:02d}.txt").read_text() == "mine" for i in mine)
    untouched = (records / "shard-00002.jsonl").stat().st_mtime_ns

    (folder / "p05.txt").unlink()  # the user wants a caption for p05 after all: only it is captioned
    again = run_ray_job(cfg, actors=1, shard_size=4)
    assert (again.captioned, again.existing, again.already_done, again.failed_before) == (1, 4, 5, 1)
    p05 = next(r["caption"] for r in read_records(records / "shard-00001.jsonl") if r["id"].endswith("p05.png"))
    assert (folder / "p05.txt").read_text() == p05
    assert (records / "shard-00002.jsonl").stat().st_mtime_ns == untouched
    # an output added later needs the images the sidecars passed over; the user's captions stay
    coco = run_ray_job(JobConfig(**{**cfg.__dict__, "coco": tmp_path / "c.json"}), actors=1, shard_size=4)
    assert (coco.captioned, coco.existing) == (4, 0) and len(json.loads((tmp_path / "c.json").read_text())) == 10
    assert all((folder / f"p{i:02d}.txt").read_text() == "mine" for i in mine[:4])


def test_summary_is_exact_when_a_driver_output_fails_in_a_half_done_shard(photos, tmp_path, tiny):
    folder = tmp_path / "photos"
    shutil.copytree(photos, folder)
    cfg = _cfg(folder, tmp_path, parquet=None, langs=["en"], sidecar=SidecarSpec(existing="overwrite"))
    shards = plan_shards(cfg, shard_size=4)
    (tmp_path / "jsonl").mkdir()
    partial = tmp_path / "jsonl" / ".shard-00001.partial.jsonl"  # a killed run had done p04 and p05 of shard 1
    run_job(JobConfig(**{**cfg.__dict__, "inputs": shards[1]["inputs"][:2], "sidecar": None, "jsonl": partial}), tiny)
    (folder / "p05.txt").mkdir()  # a folder in the way: p05's sidecar cannot be written
    s = run_ray_job(cfg, actors=1, shard_size=4)
    # p05 was done before (by the shard's journal) and fails now; it is not taken off the captioned
    assert (s.captioned, s.already_done, s.failed, s.total) == (8, 1, 2, 11)
    assert any("cannot write the sidecar" in e for _, e in s.examples)
    again = run_ray_job(cfg, actors=1, shard_size=4)
    assert (again.captioned, again.already_done, again.failed_before, again.failed) == (0, 9, 2, 0)


def test_a_changed_folder_does_not_trust_old_markers(photos, tmp_path, tiny):
    folder = tmp_path / "photos"
    shutil.copytree(photos, folder)
    cfg = _cfg(folder, tmp_path, parquet=None)
    (tmp_path / "jsonl").mkdir()
    for s in plan_shards(cfg, shard_size=4):
        caption_shard(cfg, s["name"], s["inputs"], tiny)
    Image.new("RGB", (20, 20)).save(folder / "a-new.png")  # sorts first: every shard now holds other images
    assert [s["inputs"][0] for s in plan_shards(cfg, shard_size=4)][0].endswith("a-new.png")
    summary = run_ray_job(cfg, actors=1, shard_size=4)
    assert (summary.captioned, summary.failed, summary.already_done) == (11, 1, 0)  # every shard redone
    recs = read_ray_records(tmp_path / "jsonl")
    keys = [(Path(r["id"]).name, r["lang"]) for r in recs]
    assert len(keys) == len(set(keys)) == 24 and ("a-new.png", "de") in keys  # the new image, and no duplicates


def test_cli_ray_job_over_a_quoted_glob_of_tar_shards(tmp_path, capsys):
    from polycap.cli import main

    for n in range(2):
        with tarfile.open(tmp_path / f"part-{n}.tar", "w") as tar:
            for i in range(2):
                buf = io.BytesIO()
                Image.new("RGB", (20 + i, 20), (n * 90, i * 90, 0)).save(buf, "PNG")
                info = tarfile.TarInfo(f"{i:04d}.png")
                info.size = len(buf.getvalue())
                tar.addfile(info, io.BytesIO(buf.getvalue()))
    pattern = str(tmp_path / "*.tar")  # quoted: the shell left the pattern to polycap
    shards = plan_shards(JobConfig(inputs=[pattern], jsonl=tmp_path / "o"))
    assert [(s["kind"], Path(s["inputs"][0]).name) for s in shards] == [("tar", "part-0.tar"), ("tar", "part-1.tar")]
    caps = tmp_path / "caps"
    args = ["batch", pattern, "-m", TINY, "--device", "cpu", "-l", "en", "--engine", "ray", "--actors", "1",
            "--sidecar-dir", str(caps), "--prefix", "ohwx, ", "-q"]  # fmt: skip
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["captioned"] == 4
    recs = read_ray_records(caps / ".polycap-batch" / "ray-records")
    assert sorted(r["id"] for r in recs) == [f"part-{n}.tar/000{i}" for n in range(2) for i in range(2)]
    for r in recs:  # tar members have no folder: their sidecars go under --sidecar-dir, named by id
        assert (caps / f"{r['id']}.txt").read_text() == f"ohwx, {r['caption']}"
