"""``polycap batch``: inputs, outputs, resume, sidecar policies, metadata and bad input (in process).

The kill -9 test of a real subprocess is in test_batch_resume.py, Ray in test_batch_ray.py.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from PIL import Image

import polycap
from polycap.batch import JobConfig, SidecarSpec, read_records, run_job
from polycap.batch.engine import make_record
from polycap.batch.inputs import Item
from polycap.cli import main

TINY = "polycap-tiny-random"


@pytest.fixture(scope="module")
def tiny():
    return polycap.load(TINY, device="cpu")


def make_photos(folder: Path, n: int, size=(40, 30), fmt="png") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        p = folder / f"img{i:03d}.{fmt}"
        Image.new("RGB", (size[0] + i % 7, size[1]), (i * 37 % 256, i * 11 % 256, 90)).save(p)
        paths.append(p)
    return paths


def job(tmp_path: Path, inputs, **kw) -> JobConfig:
    kw.setdefault("progress", "off")
    return JobConfig(inputs=[str(x) for x in inputs], model=TINY, device="cpu", **kw)


def keys(recs) -> list[tuple[str, str]]:
    return sorted((r["id"], r["lang"]) for r in recs)


# ---- records, outputs and resume ---------------------------------------------------------------


def test_records_have_the_documented_fields_and_match_polycap_caption(tmp_path, tiny):
    photos = make_photos(tmp_path / "p", 5)
    s = run_job(job(tmp_path, [tmp_path / "p"], langs=["en", "de"], jsonl=tmp_path / "o.jsonl"), tiny)
    recs = read_records(tmp_path / "o.jsonl")
    assert (s.captioned, s.failed, s.total) == (5, 0, 5)
    assert list(recs[0])[:8] == ["id", "path", "lang", "caption", "score", "model", "options", "error"]
    assert keys(recs) == sorted((str(p), lg) for p in photos for lg in ("en", "de"))
    assert recs[1]["options"]["lang"] == "de" and recs[0]["model"] == TINY
    # the same captions polycap caption writes for the same images
    direct = tiny.caption_many([str(p) for p in photos], langs=["en", "de"])
    assert [r["caption"] for r in recs] == [c.text for c in direct]


def test_rerun_of_a_finished_job_only_checks(tmp_path, tiny):
    make_photos(tmp_path / "p", 6)
    cfg = job(tmp_path, [tmp_path / "p"], jsonl=tmp_path / "o.jsonl", parquet=tmp_path / "pq", flush_rows=4)
    run_job(cfg, tiny)
    before = (tmp_path / "o.jsonl").read_bytes()
    again = run_job(cfg, tiny)
    assert (again.captioned, again.already_done) == (0, 6)
    assert (tmp_path / "o.jsonl").read_bytes() == before
    assert keys(read_records(tmp_path / "pq")) == keys(read_records(tmp_path / "o.jsonl"))


def test_rerun_of_a_finished_job_does_not_load_the_model(tmp_path, tiny, monkeypatch):
    make_photos(tmp_path / "p", 3)
    cfg = job(tmp_path, [tmp_path / "p"], jsonl=tmp_path / "o.jsonl")  # the default language: from the registry
    run_job(cfg, tiny)

    def boom(cfg):
        raise AssertionError("the model was loaded for a job with nothing to do")

    monkeypatch.setattr("polycap.batch.engine.load_captioner", boom)
    assert run_job(cfg).already_done == 3


def test_progress_json_lines_in_logs(tmp_path):
    from polycap.batch.progress import Progress

    stream = io.StringIO()
    with Progress(4, "auto", every=0.0, stream=stream) as bar:  # not a terminal: JSON lines
        bar.update(done=1)
        bar.update(failed=1, skipped=1)
    lines = [json.loads(x) for x in stream.getvalue().splitlines()]
    last = lines[-1]
    assert last["event"] == "progress" and (last["done"], last["failed"], last["skipped"]) == (1, 1, 1)
    assert last["total"] == 4 and last["eta_s"] is not None
    quiet = io.StringIO()
    with Progress(4, "off", every=0.0, stream=quiet) as bar:
        bar.update(done=4)
    assert quiet.getvalue() == ""
    with Progress(None, "bar", stream=io.StringIO()) as bar:  # a terminal's bar; no total (tar shards)
        bar.update(done=2)
    assert bar.done == 2 and bar.snapshot()["eta_s"] is None


def test_torn_last_line_is_repaired_and_the_item_redone(tmp_path, tiny):
    make_photos(tmp_path / "p", 4)
    out = tmp_path / "o.jsonl"
    cfg = job(tmp_path, [tmp_path / "p"], jsonl=out)
    run_job(cfg, tiny)
    lines = out.read_bytes().splitlines(keepends=True)
    out.write_bytes(b"".join(lines[:2]) + lines[2][:17])  # a kill in the middle of the third line
    s = run_job(cfg, tiny)
    assert (s.captioned, s.already_done) == (2, 2)
    recs = read_records(out)
    assert keys(recs) == keys([json.loads(x) for x in lines]) and len(recs) == 4


def test_outputs_at_different_points_each_get_only_what_they_lack(tmp_path, tiny):
    make_photos(tmp_path / "p", 5)
    run_job(job(tmp_path, [tmp_path / "p"], jsonl=tmp_path / "o.jsonl"), tiny)
    s = run_job(job(tmp_path, [tmp_path / "p"], jsonl=tmp_path / "o.jsonl", coco=tmp_path / "c.json"), tiny)
    assert s.captioned == 5 and len(read_records(tmp_path / "o.jsonl")) == 5
    coco = json.loads((tmp_path / "c.json").read_text())
    assert len(coco) == 5 and set(coco[0]) == {"image_id", "caption"}
    assert coco[0]["image_id"] == str(tmp_path / "p" / "img000.png")  # not a COCO name: the id as text


def test_coco_image_ids():
    from polycap.batch.outputs import coco_image_id

    assert coco_image_id("val/COCO_val2014_000000391895.jpg") == 391895 and coco_image_id("42.jpg") == 42
    assert coco_image_id("dog_2.jpg") == "dog_2.jpg"


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_bad_inputs_fail_alone_with_reasons_and_retry_failed(tmp_path, tiny):
    folder = tmp_path / "p"
    make_photos(folder, 20)
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "text.png").write_text("hello, not an image")
    good = (folder / "img000.png").read_bytes()
    (folder / "cut.png").write_bytes(good[: len(good) // 2])
    bomb = folder / "bomb.png"
    Image.new("1", (12000, 12000)).save(bomb)  # a few KB that would decode to 144 MP
    out = tmp_path / "o.jsonl"
    s = run_job(job(tmp_path, [folder], jsonl=out, max_pixels=50_000_000), tiny)
    assert (s.captioned, s.failed) == (20, 4)
    errors = {Path(r["id"]).name: r["error"] for r in read_records(out) if r["error"]}
    assert "empty file (0 bytes)" in errors["zero.jpg"] and "text file" in errors["text.png"]
    assert "truncated or corrupt" in errors["cut.png"] and "image too large" in errors["bomb.png"]
    assert sum(s.reasons.values()) == 4
    # a rerun leaves failures alone; --retry-failed tries them again and keeps one record each
    assert run_job(job(tmp_path, [folder], jsonl=out, max_pixels=50_000_000), tiny).failed_before == 4
    (folder / "zero.jpg").write_bytes(good)  # the user fixed one file
    s = run_job(job(tmp_path, [folder], jsonl=out, max_pixels=50_000_000, retry_failed=True), tiny)
    assert (s.captioned, s.failed, s.already_done) == (1, 3, 20)
    recs = read_records(out)
    assert len(recs) == 24 and len(set(keys(recs))) == 24


def test_manifests_jsonl_csv_parquet_and_caption_manifest(tmp_path, tiny):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    photos = make_photos(tmp_path / "data" / "imgs", 3)
    rel = [f"imgs/{p.name}" for p in photos]
    (tmp_path / "data" / "m.jsonl").write_text("".join(json.dumps({"id": f"a{i}", "file_name": r}) + "\n"
                                                        for i, r in enumerate(rel)))  # fmt: skip
    (tmp_path / "data" / "m.csv").write_text("key,path\n" + "".join(f"k{i},{r}\n" for i, r in enumerate(rel)))
    pq.write_table(pa.table({"id": ["q0", "q1", "q2"], "image": rel}), tmp_path / "data" / "m.parquet")
    caps = "".join(json.dumps({"image": r, "split": "val", "captions": {"en": ["x"]}}) + "\n" for r in rel)
    (tmp_path / "data" / "captions.jsonl").write_text(caps)
    data = tmp_path / "data"
    s = run_job(job(tmp_path, [data / "m.jsonl", data / "m.parquet", data / "captions.jsonl"],
                    jsonl=tmp_path / "o.jsonl"), tiny)  # fmt: skip
    ids = [r["id"] for r in read_records(tmp_path / "o.jsonl")]
    assert s.failed == 0 and ids == ["a0", "a1", "a2", "q0", "q1", "q2", *rel]
    s = run_job(job(tmp_path, [data / "m.csv"], id_column="key", jsonl=tmp_path / "c.jsonl"), tiny)
    assert [r["id"] for r in read_records(tmp_path / "c.jsonl")] == ["k0", "k1", "k2"] and s.failed == 0


def test_urls_in_a_manifest_are_refused_unless_allowed(tmp_path, tiny):
    (tmp_path / "m.jsonl").write_text(json.dumps({"id": "u", "url": "https://example.invalid/a.jpg"}) + "\n")
    s = run_job(job(tmp_path, [tmp_path / "m.jsonl"], jsonl=tmp_path / "o.jsonl"), tiny)
    assert s.failed == 1 and "URLs are refused" in read_records(tmp_path / "o.jsonl")[0]["error"]


def test_webdataset_shard(tmp_path, tiny):
    shard = tmp_path / "shard-000.tar"
    with tarfile.open(shard, "w") as tar:
        for i in range(3):
            buf = io.BytesIO()
            Image.new("RGB", (30, 20), (i * 60, 0, 0)).save(buf, "JPEG")
            for name, data in ((f"{i:04d}.jpg", buf.getvalue()), (f"{i:04d}.txt", b"old caption")):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("0003.jpg")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"junk"))
    s = run_job(job(tmp_path, [shard], jsonl=tmp_path / "o.jsonl", sidecar=SidecarSpec(root=tmp_path / "caps")), tiny)
    recs = read_records(tmp_path / "o.jsonl")
    assert (s.captioned, s.failed) == (3, 1)
    assert [r["id"] for r in recs] == [f"shard-000.tar/000{i}" for i in range(4)]
    assert recs[3]["error"].startswith("shard-000.tar/0003: not a recognised image format")
    assert (tmp_path / "caps" / "shard-000.tar" / "0001.txt").read_text() == recs[1]["caption"]


def _tar(path: Path, n: int) -> None:
    with tarfile.open(path, "w") as tar:
        for i in range(n):
            buf = io.BytesIO()
            Image.new("RGB", (30, 20), (i * 60, 40, 0)).save(buf, "PNG")
            info = tarfile.TarInfo(f"{i:04d}.png")
            info.size = len(buf.getvalue())
            tar.addfile(info, io.BytesIO(buf.getvalue()))


def test_a_quoted_glob_of_shards_or_manifests_stands_for_its_files(tmp_path, tiny, capsys):
    (tmp_path / "shards").mkdir()
    for n in range(2):
        _tar(tmp_path / "shards" / f"part-{n}.tar", 2)
    photos = make_photos(tmp_path / "m" / "imgs", 2)
    for n, p in enumerate(photos):
        (tmp_path / "m" / f"list-{n}.jsonl").write_text(json.dumps({"id": f"row{n}", "image": f"imgs/{p.name}"}) + "\n")
    # as the shell passes a quoted glob: the pattern itself
    out = tmp_path / "o.jsonl"
    args = ["batch", str(tmp_path / "shards" / "*.tar"), str(tmp_path / "m" / "*.jsonl"), "-m", TINY, "--device", "cpu",
            "-o", str(out), "-q"]  # fmt: skip
    assert main(args) == 0
    ids = [r["id"] for r in read_records(out)]
    assert ids == ["part-0.tar/0000", "part-0.tar/0001", "part-1.tar/0000", "part-1.tar/0001", "row0", "row1"]
    assert json.loads(capsys.readouterr().out)["captioned"] == 6
    # a glob of images is still the folder walk's (a manifest among the images is not read as one)
    (tmp_path / "m" / "imgs" / "notes.jsonl").write_text("{}\n")
    s = run_job(job(tmp_path, [tmp_path / "m" / "imgs" / "*"], jsonl=tmp_path / "g.jsonl"), tiny)
    assert (s.captioned, s.failed) == (2, 0)


def test_temporary_files_a_kill_left_are_removed_on_the_next_run(tmp_path, tiny):
    has_xmp = _has_pyexiv2()
    make_photos(tmp_path / "p", 3)
    state = tmp_path / "p" / ".polycap-batch"
    cfg = job(tmp_path, [tmp_path / "p"], jsonl=tmp_path / "o.jsonl", coco=tmp_path / "c.json", sidecar=SidecarSpec(),
              xmp="sidecar" if has_xmp else None)  # fmt: skip
    run_job(cfg, tiny)
    last = Path(json.loads((state / "sidecars.jsonl").read_text().splitlines()[-1])["file"])
    last.unlink()  # as a kill between the journal line and the rename leaves it ...
    pid = 4242  # ... the temporary files of the killed process
    stale = [last.with_name(f".{last.name}.{pid}.polycap-tmp"), tmp_path / f".c.json.{pid}.polycap-tmp",
             tmp_path / f".o.jsonl.{pid}.polycap-tmp", state / f".sidecars.jsonl.{pid}.polycap-tmp"]  # fmt: skip
    if has_xmp:
        stale.append(tmp_path / "p" / f".img002.xmp.{pid}.polycap-tmp")  # the last image's XMP write
    others = [tmp_path / "p" / f".notes.txt.{pid}.polycap-tmp", tmp_path / "p" / "mine.polycap-tmp",
              tmp_path / f".c.json.backup.{pid}.polycap-tmp"]  # fmt: skip
    for f in stale + others:
        f.write_bytes(b"half")
    s = run_job(cfg, tiny)
    assert s.captioned == 1 and last.read_text()
    assert [f.name for f in stale if f.exists()] == []
    assert all(f.read_bytes() == b"half" for f in others)  # not this job's: left alone


def _has_pyexiv2() -> bool:
    try:
        import pyexiv2  # noqa: F401
    except ImportError:
        return False
    return True


def test_polycap_score_reads_batch_records(tmp_path, tiny, monkeypatch):
    pytest.importorskip("pyarrow")
    from polycap.data.manifest import read_manifest
    from polycap.eval.evaluate import load_predictions

    monkeypatch.chdir(tmp_path)
    photos = make_photos(tmp_path / "data" / "imgs", 4)
    keys_ = [f"imgs/{p.name}" for p in photos] + ["imgs/gone.png"]  # gone.png: a failed record
    refs = {"en": ["a red square", "a plain colour"], "de": ["ein rotes Quadrat"]}
    manifest = tmp_path / "data" / "captions.jsonl"
    manifest.write_text("".join(json.dumps({"image": k, "split": "val", "captions": refs}) + "\n" for k in keys_))
    # over the manifest (ids are its image keys), and over the image folder, relative (ids are paths)
    run_job(job(tmp_path, [manifest], langs=["en", "de"], jsonl=Path("m.jsonl"), parquet=Path("pq")), tiny)
    run_job(job(tmp_path, ["data/imgs"], langs=["en", "de"], jsonl=Path("f.jsonl")), tiny)
    recs = read_records(Path("m.jsonl"))
    assert recs[-1]["error"] and {r["id"] for r in recs} == set(keys_)
    plain = [{"image": r["id"], "lang": r["lang"], "caption": r["caption"]} for r in recs if not r["error"]]
    Path("plain.jsonl").write_text("".join(json.dumps(x) + "\n" for x in plain))
    items = read_manifest(manifest)
    want, none_failed = load_predictions("plain.jsonl", items)
    assert none_failed == {} and len(want["en"]) == len(want["de"]) == 4
    assert load_predictions("m.jsonl", items) == load_predictions("pq", items) == (want, {"en": 1, "de": 1})
    assert load_predictions("f.jsonl", items) == (want, {})  # named by path, found by the manifest's files
    for name, errors in (("m.jsonl", 1), ("f.jsonl", 0)):  # one language: each METEOR run starts Java
        assert main(["score", "--data", str(manifest), "--preds", name, "--lang", "en", "--out", "r.json"]) == 0
        r = json.loads(Path("r.json").read_text())["languages"]["en"]
        assert (r["n_images"], r["n_missing"], r["n_errors"]) == (4, 1, errors)


def test_polycap_score_reads_the_coco_results_of_a_batch_job(flickr8k, tmp_path, capsys, monkeypatch):
    from polycap.data.manifest import read_manifest
    from polycap.eval.evaluate import load_predictions

    monkeypatch.chdir(tmp_path)
    lines = [json.loads(x) for x in (flickr8k / "captions.jsonl").open(encoding="utf-8")]
    val = [x for x in lines if x["split"] == "val" and "de" in x["captions"]][:4]
    (tmp_path / "imgs").mkdir()
    with Path("m.jsonl").open("w", encoding="utf-8") as f:
        for x in val:
            shutil.copy(flickr8k / x["image"], tmp_path / "imgs")
            f.write(json.dumps({**x, "image": f"imgs/{Path(x['image']).name}"}, ensure_ascii=False) + "\n")
    args = ["batch", str(tmp_path / "imgs"), "-m", TINY, "--device", "cpu", "-l", "en,de", "-o", "out.jsonl",
            "--coco", "coco.json", "-q"]  # fmt: skip; over the folder: ids are absolute paths
    assert main(args) == 0
    capsys.readouterr()
    items = read_manifest("m.jsonl")
    want, _ = load_predictions("out.jsonl", items)
    assert len(want["en"]) == len(want["de"]) == 4
    for lang in ("en", "de"):
        assert load_predictions(f"coco.{lang}.json", items, [lang]) == ({lang: want[lang]}, {})
    Path("coco.json.state.jsonl").rename("journal.jsonl")  # without the job's journal: text ids name the files
    assert load_predictions("coco.en.json", items, ["en"]) == ({"en": want["en"]}, {})
    reports = {}
    for preds in ("out.jsonl", "coco.en.json"):
        assert main(["score", "--data", "m.jsonl", "--preds", preds, "--lang", "en", "--out", "r.json"]) == 0
        reports[preds] = json.loads(Path("r.json").read_text())["languages"]["en"]
    assert reports["coco.en.json"]["n_images"] == 4
    assert reports["coco.en.json"]["metrics"] == reports["out.jsonl"]["metrics"]
    capsys.readouterr()
    for lang_args in ([], ["--lang", "en,de"]):  # COCO results carry no language
        assert main(["score", "--data", "m.jsonl", "--preds", "coco.en.json", *lang_args]) == 2
        assert "pass --lang" in capsys.readouterr().err


def test_coco_results_with_numbers_for_ids_map_back_to_the_manifest(tmp_path, tiny):
    from polycap.data.manifest import read_manifest
    from polycap.errors import OptionError, PolycapError
    from polycap.eval.evaluate import load_predictions

    for name in ("a/7.png", "a/42.png", "b/7.png"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        Image.new("RGB", (30, 20), (len(name) * 20, 80, 9)).save(tmp_path / name)
    (tmp_path / "a" / "9.png").write_bytes(b"")  # fails: no COCO result, a failed entry in the journal
    run_job(job(tmp_path, [tmp_path / "a"], langs=["en"], jsonl=tmp_path / "o.jsonl", coco=tmp_path / "c.json"), tiny)
    assert sorted(r["image_id"] for r in json.loads((tmp_path / "c.json").read_text())) == [7, 42]
    caps = {Path(r["id"]).name: r["caption"] for r in read_records(tmp_path / "o.jsonl")}
    rows = [{"image": k, "split": "val", "captions": {"en": ["a thing"]}} for k in ("a/7.png", "a/42.png", "a/9.png")]
    both = tmp_path / "both.jsonl"
    both.write_text("".join(json.dumps(r) + "\n" for r in [*rows, {**rows[0], "image": "b/7.png"}]))
    want = {"en": {"a/7.png": caps["7.png"], "a/42.png": caps["42.png"]}}
    # the journal beside the file names each result's image, even where the numbers alone cannot
    assert load_predictions(tmp_path / "c.json", read_manifest(both), ["en"]) == (want, {"en": 1})
    (tmp_path / "c.json.state.jsonl").unlink()
    with pytest.raises(PolycapError, match="image_id 7 fits several manifest images"):
        load_predictions(tmp_path / "c.json", read_manifest(both), ["en"])
    one = tmp_path / "one.jsonl"
    one.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert load_predictions(tmp_path / "c.json", read_manifest(one), ["en"]) == (want, {})
    with pytest.raises(OptionError, match="pass --lang"):
        load_predictions(tmp_path / "c.json", read_manifest(one))


# ---- sidecars --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "expected"),
    [("skip", "mine\n"), ("overwrite", "{new}"), ("append", "mine | {new}"), ("prepend", "{new} | mine")],
)
def test_existing_caption_policies_and_prefix_suffix(tmp_path, tiny, policy, expected):
    make_photos(tmp_path / "p", 3)
    (tmp_path / "p" / "img001.txt").write_text("mine\n")
    spec = SidecarSpec(prefix="ohwx, ", suffix=" END", existing=policy, separator=" | ")
    cfg = job(tmp_path, [tmp_path / "p"], sidecar=spec, jsonl=tmp_path / "o.jsonl")
    s = run_job(cfg, tiny)
    caption = {Path(r["id"]).stem: r["caption"] for r in read_records(tmp_path / "o.jsonl")}
    new = f"ohwx, {caption['img001']} END"
    assert (tmp_path / "p" / "img001.txt").read_text() == expected.format(new=new)
    assert (tmp_path / "p" / "img000.txt").read_text() == f"ohwx, {caption['img000']} END"
    # the job's own files are not "existing" the next time, and append does not add twice
    again = run_job(cfg, tiny)
    assert again.captioned == 0 and (tmp_path / "p" / "img001.txt").read_text() == expected.format(new=new)
    assert s.existing == 0  # the jsonl output still needed img001, so it was captioned
    only_sidecar = run_job(job(tmp_path, [tmp_path / "p"], sidecar=spec), tiny)
    assert only_sidecar.captioned == 0


def test_skip_policy_never_captions_images_that_have_a_caption(tmp_path, tiny):
    make_photos(tmp_path / "p", 4)
    (tmp_path / "p" / "img002.txt").write_text("mine")
    s = run_job(job(tmp_path, [tmp_path / "p"], sidecar=SidecarSpec()), tiny)
    assert (s.captioned, s.existing) == (3, 1) and (tmp_path / "p" / "img002.txt").read_text() == "mine"


def test_a_journal_entry_whose_file_never_arrived_is_redone(tmp_path, tiny):
    make_photos(tmp_path / "p", 3)
    cfg = job(tmp_path, [tmp_path / "p"], sidecar=SidecarSpec(existing="append", prefix="T: "))
    run_job(cfg, tiny)
    journal = tmp_path / "p" / ".polycap-batch" / "sidecars.jsonl"
    last = json.loads(journal.read_text().splitlines()[-1])
    Path(last["file"]).unlink()  # as if killed after the journal line, before the rename
    s = run_job(cfg, tiny)
    assert s.captioned == 1 and Path(last["file"]).read_text().count("T: ") == 1


@pytest.mark.parametrize(
    ("layout", "langs", "names"),
    [
        ("auto", ["en"], ["img000.txt"]),
        ("auto", ["en", "de"], ["img000.de.txt", "img000.en.txt"]),
        ("suffix", ["en"], ["img000.en.txt"]),
    ],
)
def test_language_layouts(tmp_path, tiny, layout, langs, names):
    make_photos(tmp_path / "p", 1)
    run_job(job(tmp_path, [tmp_path / "p"], langs=langs, sidecar=SidecarSpec(layout=layout, ext="caption")), tiny)
    assert sorted(p.name for p in (tmp_path / "p").iterdir() if p.suffix in (".txt", ".caption")) == [
        n.replace(".txt", ".caption") for n in names
    ]


def test_folder_layout_under_a_sidecar_dir(tmp_path, tiny):
    make_photos(tmp_path / "p" / "sub", 2)
    spec = SidecarSpec(layout="folder", root=tmp_path / "caps")
    run_job(job(tmp_path, [tmp_path / "p"], langs=["en", "de"], sidecar=spec), tiny)
    found = sorted(str(p.relative_to(tmp_path / "caps")) for p in (tmp_path / "caps").rglob("*.txt"))
    rel = str((tmp_path / "p" / "sub").relative_to("/"))
    assert found == [f"{lg}/{rel}/img00{i}.txt" for lg in ("de", "en") for i in (0, 1)]


# ---- remote model with failures ----------------------------------------------------------------


def test_retry_failed_after_remote_server_errors(tmp_path, monkeypatch):
    pytest.importorskip("openai")
    from fake_vlm_server import FAKE_KEY, KEY_VARS, SDK_ENV, FakeVLMServer, Reply, register_remote_plugins
    from polycap.backends.remote.retry import RetryPolicy

    register_remote_plugins()
    for var in KEY_VARS:
        monkeypatch.setenv(var, FAKE_KEY)
    for var in SDK_ENV:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("POLYCAP_CACHE_DIR", str(tmp_path / "cache"))
    make_photos(tmp_path / "p", 6)
    with FakeVLMServer() as server:
        server.script(*[Reply(kind="status", status=400)] * 2)
        cap = polycap.load("openai-compatible:llava", base_url=server.base_url("openai-compatible"),
                           retry=RetryPolicy(max_retries=0, sleep=lambda s: None))  # fmt: skip
        cfg = job(tmp_path, [tmp_path / "p"], jsonl=tmp_path / "o.jsonl", sidecar=SidecarSpec())
        s = run_job(cfg, cap)
        assert (s.captioned, s.failed) == (4, 2)
        assert len(list((tmp_path / "p").glob("*.txt"))) == 4
        s = run_job(JobConfig(**{**cfg.__dict__, "retry_failed": True}), cap)
        assert (s.captioned, s.failed, s.already_done) == (2, 0, 4)
    recs = read_records(tmp_path / "o.jsonl")
    assert len(recs) == 6 and not any(r["error"] for r in recs) and len(list((tmp_path / "p").glob("*.txt"))) == 6


# ---- image decoding --------------------------------------------------------------------------


def test_large_jpegs_are_draft_decoded_for_a_small_model(tmp_path, tiny, monkeypatch):
    from polycap import images

    Image.new("RGB", (1600, 1200), (10, 120, 200)).save(tmp_path / "big.jpg", quality=90)
    assert images.load_image(tmp_path / "big.jpg", min_side=100).size == (200, 150)  # 1/8 scale
    assert images.load_image(tmp_path / "big.jpg", min_side=400).size == (800, 600)
    assert images.load_image(tmp_path / "big.jpg").size == (1600, 1200)
    seen = []
    real = tiny.caption_batch_langs
    monkeypatch.setattr(tiny, "caption_batch_langs", lambda ims, o: seen.extend(i.size for i in ims) or real(ims, o))
    run_job(job(tmp_path, [tmp_path / "big.jpg"], jsonl=tmp_path / "o.jsonl"), tiny)
    assert seen == [(200, 150)]  # the tiny model's input is 32 px: 1/8 keeps both sides >= 32


# ---- metadata --------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["embed", "sidecar"])
def test_xmp_alt_text_written_read_back_and_pixels_unchanged(tmp_path, tiny, mode):
    pytest.importorskip("pyexiv2")
    from polycap.batch.sidecars import read_alt_text

    photos = make_photos(tmp_path / "p", 2, fmt="jpg") + make_photos(tmp_path / "q", 1, fmt="png")
    pixels = {p: Image.open(p).tobytes() for p in photos}
    cfg = job(tmp_path, [tmp_path / "p", tmp_path / "q"], langs=["en", "de"], xmp=mode, jsonl=tmp_path / "o.jsonl")
    run_job(cfg, tiny)
    caps = {(r["id"], r["lang"]): r["caption"] for r in read_records(tmp_path / "o.jsonl")}
    for p in photos:
        target = p if mode == "embed" else p.with_suffix(".xmp")
        alt = read_alt_text(target)
        want = {"x-default": caps[(str(p), "en")], "en": caps[(str(p), "en")], "de": caps[(str(p), "de")]}
        assert alt["Xmp.iptc.AltTextAccessibility"] == want and alt["Xmp.dc.description"] == want
        assert Image.open(p).tobytes() == pixels[p]
        if shutil.which("exiftool"):
            args = ["exiftool", "-j", "-AltTextAccessibility-de", "-Description-de", str(target)]
            tags = json.loads(subprocess.run(args, capture_output=True, text=True).stdout)[0]
            assert tags["AltTextAccessibility-de"] == tags["Description-de"] == caps[(str(p), "de")]
    assert run_job(cfg, tiny).captioned == 0


def test_xmp_on_a_file_that_cannot_take_it_fails_that_item_only(tmp_path, tiny):
    pytest.importorskip("pyexiv2")
    make_photos(tmp_path / "p", 2, fmt="bmp")  # exiv2 cannot write BMP
    make_photos(tmp_path / "p2", 1, fmt="jpg")
    s = run_job(job(tmp_path, [tmp_path / "p", tmp_path / "p2"], xmp="embed", state_dir=tmp_path / "st"), tiny)
    assert (s.captioned, s.failed) == (1, 2)
    assert "cannot write XMP metadata" in next(iter(s.reasons))


# ---- CLI ---------------------------------------------------------------------------------------


def test_cli_batch_and_its_summary(tmp_path, capsys):
    make_photos(tmp_path / "p", 3)
    (tmp_path / "p" / "zero.png").write_bytes(b"")
    args = ["batch", str(tmp_path / "p"), "-m", TINY, "--device", "cpu", "-o", str(tmp_path / "o.jsonl"),
            "--sidecar", "--prefix", "ohwx, ", "-l", "en,de", "--max-tokens", "5", "--progress", "json"]  # fmt: skip
    assert main(args) == 1  # one item failed
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    assert summary["captioned"] == 3 and summary["failed"] == 1
    assert "empty file (0 bytes)" in summary["failure_reasons"] and "1 failed" in captured.err
    recs = read_records(tmp_path / "o.jsonl")
    assert len(recs) == 8 and recs[0]["options"]["max_new_tokens"] == 5
    assert (tmp_path / "p" / "img000.de.txt").read_text().startswith("ohwx, ")
    assert main([*args, "-q"]) == 1  # the failure is still there; nothing recaptioned
    assert json.loads(capsys.readouterr().out)["skipped"]["done_before"] == 3


def test_batch_takes_every_model_and_generation_flag_of_caption():
    import typer

    from polycap.cli import commands  # noqa: F401 - registers the commands
    from polycap.cli.app import app

    cmds = typer.main.get_command(app).commands
    flags = {name: {o for p in cmds[name].params for o in p.opts} for name in ("caption", "batch")}
    own = {"--format", "-f", "--overwrite"}  # caption's output flags; batch has its own outputs
    assert flags["caption"] - own <= flags["batch"]


def test_cli_batch_usage_errors(tmp_path, capsys):
    make_photos(tmp_path / "p", 1)
    assert main(["batch", str(tmp_path / "p"), "-m", TINY, "--device", "cpu"]) == 2
    assert "give at least one output" in capsys.readouterr().err
    assert main(["batch", str(tmp_path / "nope"), "-m", TINY, "-o", str(tmp_path / "o.jsonl")]) == 2
    assert "input not found" in capsys.readouterr().err
    assert main(["batch", str(tmp_path / "p"), "-m", TINY, "--sidecar", "--existing", "never"]) == 2
    assert "--existing must be one of" in capsys.readouterr().err
    (tmp_path / "c.jsonl").write_text(json.dumps({"image": "x.jpg", "lang": "en", "caption": "a"}) + "\n")
    assert main(["batch", str(tmp_path / "p"), "-m", TINY, "-o", str(tmp_path / "c.jsonl")]) == 2
    assert "not polycap batch records" in capsys.readouterr().err


def test_make_record_escapes_undecodable_names():
    from polycap.types import Caption

    name = "caf\udce9.jpg"
    rec = make_record(Item(id="caf\\xe9.jpg", path=name, source=name), Caption("a", "en", "m"), {"lang": "en"})
    assert rec["path"] == "caf\\xe9.jpg" and "image_bytes" in rec and json.dumps(rec)
