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
