"""The CLI, in-process through main(argv) and once as the installed script."""

from __future__ import annotations

import csv
import io
import json
import shutil
import subprocess

import pytest

from polycap.cli import main

TINY = ["--model", "polycap-tiny-random", "--device", "cpu"]


def test_caption_text_one_line_per_image(photo_dir, capsys):
    assert main(["caption", str(photo_dir), *TINY, "-q"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3
    assert all(line.split("\t")[1] == "en" for line in lines)


def test_caption_several_languages_jsonl(photo_dir, capsys):
    code = main(["caption", str(photo_dir / "img0.png"), *TINY, "--lang", "en,de,ar", "-f", "jsonl", "--beams", "2"])
    assert code == 0
    recs = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["lang"] for r in recs] == ["en", "de", "ar"]
    assert all(r["error"] is None and r["model"] == "polycap-tiny-random" for r in recs)


def test_no_repeat_ngram_size_reaches_generate(photo_dir, capsys):
    """The random tiny model repeats one token ("ititit..."); --no-repeat-ngram-size 1 forbids that."""
    argv = ["caption", str(photo_dir / "img0.png"), *TINY, "-f", "jsonl", "--max-tokens", "20", "--beams", "2"]
    texts = []
    for extra in ([], ["--no-repeat-ngram-size", "1", "--length-penalty", "0.5"]):
        assert main([*argv, *extra]) == 0
        texts.append(json.loads(capsys.readouterr().out)["caption"])
    assert texts[0] != texts[1], texts


def test_bad_items_exit_1_and_reported(photo_dir, bad_files, capsys):
    inputs = [str(photo_dir / "img0.png"), str(bad_files["empty"]), str(bad_files["missing"])]
    code = main(["caption", *inputs, *TINY, "-f", "json"])
    assert code == 1
    captured = capsys.readouterr()
    recs = json.loads(captured.out)
    assert [r["error"] is None for r in recs] == [True, False, False]
    err_lines = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(err_lines) == 2 and "empty.jpg" in err_lines[0]


def test_csv_to_file_with_glob(photo_dir, tmp_path):
    out = tmp_path / "o.csv"
    argv = ["caption", str(photo_dir / "img*.png"), *TINY, "-f", "csv", "-o", str(out), "--seed", "1", "--sample"]
    assert main(argv) == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(rows) == 3 and rows[0]["image"].endswith("img0.png") and rows[0]["lang"] == "en"


@pytest.mark.parametrize(
    "args, message",
    [
        (["--beams", "0"], "num_beams must be >= 1"),
        (["--lang", "xx"], "does not support language 'xx'"),
        (["--format", "xml"], "--format must be one of"),
        (["--model", "no-such-model"], "unknown model"),
        (["--num-return", "3"], "num_return_sequences"),
    ],
)
def test_usage_errors_exit_2(photo_dir, capsys, args, message):
    argv = ["caption", str(photo_dir), "-q", *args]
    if "--model" not in args:
        argv += TINY
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_no_images_found_is_usage_error(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("x")
    assert main(["caption", str(tmp_path), *TINY]) == 2
    assert "no images found" in capsys.readouterr().err


def test_unknown_flag_exit_2(capsys):
    assert main(["caption", "--no-such-flag", "x.jpg"]) == 2


def test_models_and_version(capsys):
    assert main(["models", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert "polycap-tiny-random" in [m["name"] for m in data["models"]]
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("polycap ")


def test_installed_script_runs(photo_dir):
    exe = shutil.which("polycap")
    if exe is None:
        pytest.skip("polycap script not installed (pip install -e .)")
    proc = subprocess.run(
        [exe, "caption", str(photo_dir / "img1.png"), *TINY, "--format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    recs = json.loads(proc.stdout)
    assert len(recs) == 1 and recs[0]["error"] is None


# --------------------------------------------------------------------------------------------
# --out: checked before the model loads, never silently overwritten, whole records only
# --------------------------------------------------------------------------------------------


@pytest.fixture
def load_calls(monkeypatch):
    """Records every polycap.load call, so a test can tell that the model was never loaded."""
    import polycap

    calls, real = [], polycap.load
    monkeypatch.setattr(polycap, "load", lambda *a, **k: calls.append(a) or real(*a, **k))
    return calls


@pytest.mark.parametrize("where", ["missing-folder", "a-folder", "parent-is-a-file"])
def test_bad_out_path_exit_2_before_loading(photo_dir, tmp_path, capsys, load_calls, where):
    (tmp_path / "file.txt").write_text("x")
    out = {
        "missing-folder": tmp_path / "no" / "such" / "o.jsonl",
        "a-folder": tmp_path,
        "parent-is-a-file": tmp_path / "file.txt" / "o.jsonl",
    }[where]
    assert main(["caption", str(photo_dir), *TINY, "-f", "jsonl", "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: --out {out}"), err
    assert load_calls == []


def test_non_empty_out_is_never_overwritten_without_overwrite(photo_dir, tmp_path, capsys, load_calls):
    out = tmp_path / "o.jsonl"
    out.write_text('{"image": "earlier-run.jpg"}\n')
    assert main(["caption", str(photo_dir), *TINY, "-f", "jsonl", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "already exists and is not empty" in err and "--overwrite" in err and "polycap batch" in err
    assert out.read_text() == '{"image": "earlier-run.jpg"}\n' and load_calls == []
    assert main(["caption", str(photo_dir), *TINY, "-q", "-f", "jsonl", "-o", str(out), "--overwrite"]) == 0
    assert len(out.read_text().splitlines()) == 3
    out.write_text("")  # an empty file (e.g. made by the shell's > redirection) loses nothing
    assert main(["caption", str(photo_dir), *TINY, "-q", "-f", "jsonl", "-o", str(out)]) == 0


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv"])
def test_interrupted_run_keeps_every_record_written(photo_dir, tmp_path, monkeypatch, fmt):
    """The job dies after two images (as under kill): both records are in the file, whole."""
    import polycap

    real = polycap.load

    def dying_load(*args, **kwargs):
        captioner = real(*args, **kwargs)
        captions = captioner.iter_captions

        def two_then_die(*a, **k):
            it = captions(*a, **k)
            yield next(it)
            yield next(it)
            raise KeyboardInterrupt

        captioner.iter_captions = two_then_die
        return captioner

    monkeypatch.setattr(polycap, "load", dying_load)
    out = tmp_path / f"o.{fmt}"
    main(["caption", str(photo_dir), *TINY, "-q", "-f", fmt, "-o", str(out)])
    text = out.read_text()
    if fmt == "json":
        recs = json.loads(text + "\n]")  # only the closing bracket is missing
    elif fmt == "jsonl":
        recs = [json.loads(line) for line in text.splitlines()]
    else:
        recs = list(csv.DictReader(io.StringIO(text)))
    assert [r["image"].rsplit("/", 1)[1] for r in recs] == ["img0.png", "img1.png"]


@pytest.mark.parametrize("fmt", ["json", "jsonl", "csv", "text"])
def test_writer_flushes_whole_records_only(fmt):
    from polycap.cli.output import RecordWriter, record
    from polycap.types import Caption

    class Snapshots(io.StringIO):
        def __init__(self):
            super().__init__()
            self.seen = []

        def flush(self):
            self.seen.append(self.getvalue())

    caps = [Caption(f"caption {i}\nline", "en", "m", source=f"{i}.jpg", score=-1.0) for i in range(3)]
    stream = Snapshots()
    writer = RecordWriter(stream, fmt)
    for c in caps:
        writer.write(c)
    writer.close()
    for snap in stream.seen[:-1]:
        if fmt == "json":
            assert len(json.loads(snap + "\n]")) <= 3
        else:
            assert snap.endswith("\n")
    if fmt == "json":  # byte for byte what json.dump(..., indent=2) wrote before streaming
        assert stream.getvalue() == json.dumps([record(c) for c in caps], ensure_ascii=False, indent=2) + "\n"
    if fmt == "text":
        assert stream.getvalue().splitlines()[0] == "0.jpg\ten\tcaption 0\\nline"


def test_max_pixels_flag(photo_dir, capsys):
    argv = ["caption", str(photo_dir / "img0.png"), *TINY, "-f", "jsonl"]  # img0 is 64x48 = 3,072 pixels
    assert main([*argv, "--max-pixels", "1000"]) == 1
    rec = json.loads(capsys.readouterr().out)
    assert "3,072 pixels exceeds the limit of 1,000" in rec["error"] and "--max-pixels" in rec["error"]
    assert main([*argv, "--max-pixels", "3072"]) == 0


# --------------------------------------------------------------------------------------------
# What a folder walk finds: HEIC/AVIF included, what it leaves out said
# --------------------------------------------------------------------------------------------

FAKE_HEIC = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64  # header of an iPhone photo


@pytest.fixture
def no_pillow_heif(monkeypatch):
    """The default install: pillow-heif is not importable and no HEIF opener is registered."""
    import sys

    from polycap import images

    monkeypatch.setitem(sys.modules, "pillow_heif", None)
    monkeypatch.setattr(images, "_heif_registered", False, raising=False)


def test_heic_and_avif_in_a_folder_each_get_a_record(tmp_path, capsys, no_pillow_heif):
    from PIL import Image, features

    folder = tmp_path / "phone"
    folder.mkdir()
    Image.new("RGB", (20, 20), (9, 9, 9)).save(folder / "ok.png")
    (folder / "phone.HEIC").write_bytes(FAKE_HEIC)
    (folder / "scan.heif").write_bytes(FAKE_HEIC)
    has_avif = features.check("avif")
    if has_avif:
        Image.new("RGB", (20, 20), (200, 9, 9)).save(folder / "pic.avif")
    assert main(["caption", str(folder), *TINY, "-q", "-f", "jsonl"]) == 1
    recs = {r["image"].rsplit("/", 1)[1]: r for r in map(json.loads, capsys.readouterr().out.splitlines())}
    assert sorted(recs) == sorted(["ok.png", "phone.HEIC", "scan.heif"] + (["pic.avif"] if has_avif else []))
    assert "pillow-heif" in recs["phone.HEIC"]["error"] and "polycap[heif]" in recs["scan.heif"]["error"]
    assert recs["ok.png"]["error"] is None and (not has_avif or recs["pic.avif"]["error"] is None)


def test_heic_glob_names_pillow_heif_not_no_images(tmp_path, capsys, no_pillow_heif):
    (tmp_path / "a.heic").write_bytes(FAKE_HEIC)
    assert main(["caption", f"{tmp_path}/*.heic", *TINY]) == 1
    err = capsys.readouterr().err
    assert "pillow-heif" in err and "no images found" not in err


def test_skipped_files_are_reported(photo_dir, capsys):
    (photo_dir / "notes.txt").write_text("x")
    (photo_dir / ".hidden.png").write_bytes((photo_dir / "img0.png").read_bytes())
    assert main(["caption", str(photo_dir), *TINY]) == 0
    err = capsys.readouterr().err
    assert "skipped 2 files that are hidden or have no image suffix" in err
    assert ".txt: 1" in err and "hidden: 1" in err
    assert main(["caption", str(photo_dir), *TINY, "-q"]) == 0
    assert "skipped" not in capsys.readouterr().err


def test_no_images_found_says_what_was_skipped(tmp_path, capsys):
    (tmp_path / "a.cr2").write_bytes(b"raw")
    assert main(["caption", str(tmp_path), *TINY]) == 2
    err = capsys.readouterr().err
    assert "no images found" in err and "(skipped 1 file that is hidden or has no image suffix (.cr2: 1))" in err


def test_unlistable_folder_is_a_failed_item(photo_dir, capsys, monkeypatch):
    import os

    private = photo_dir / "private"
    private.mkdir()
    real = os.scandir

    def scandir(path="."):
        if os.fspath(path) == str(private):
            raise PermissionError(13, "Permission denied", str(private))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    assert main(["caption", str(photo_dir), *TINY, "-q", "-f", "jsonl"]) == 1
    captured = capsys.readouterr()
    recs = [json.loads(line) for line in captured.out.splitlines()]
    assert len(recs) == 4 and recs[0]["image"] == str(private)
    assert recs[0]["error"] == "cannot list the folder: Permission denied"
    assert f"error: {private}: cannot list the folder: Permission denied" in captured.err
