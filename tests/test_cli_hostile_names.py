"""File names the CLI must survive: bytes that are not UTF-8, tabs and newlines, odd encodings.

On POSIX a file name is bytes; Python hands the undecodable ones over as ``str`` with surrogate
escapes, which no UTF-8 writer accepts. Records carry them as ``\\xNN`` escapes plus the exact bytes
(base64, ``image_bytes``), and one bad name never costs the rest of the job.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from polycap.cli import main
from polycap.types import Caption

TINY = ["--model", "polycap-tiny-random", "--device", "cpu", "--max-tokens", "4"]
LATIN1 = b"img1_caf\xe9.png"  # "café" written by a Latin-1 system: not valid UTF-8

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX file names are bytes")


@pytest.fixture
def latin1_dir(tmp_path: Path) -> Path:
    """photos/{img0.png, img1_caf\\xe9.png, img2.png}: the middle name is not UTF-8."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, name in enumerate([b"img0.png", LATIN1, b"img2.png"]):
        Image.new("RGB", (24, 24), (80 * i, 40, 40)).save(os.path.join(os.fsencode(folder), name))
    return folder


def _records(fmt: str, data: bytes) -> list[dict]:
    text = data.decode("utf-8")  # strict: the output must be valid UTF-8
    if fmt == "jsonl":
        return [json.loads(line) for line in text.splitlines()]
    if fmt == "json":
        return json.loads(text)
    return list(csv.DictReader(io.StringIO(text)))


@pytest.mark.parametrize("fmt", ["jsonl", "json", "csv"])
def test_non_utf8_name_is_one_valid_record_and_the_job_goes_on(latin1_dir, tmp_path, fmt, capsys):
    out = tmp_path / f"out.{fmt}"
    assert main(["caption", str(latin1_dir), *TINY, "-q", "-f", fmt, "-o", str(out)]) == 0
    recs = _records(fmt, out.read_bytes())
    assert [Path(r["image"]).name for r in recs] == ["img0.png", "img1_caf\\xe9.png", "img2.png"]
    assert all(not r["error"] for r in recs)
    exact = base64.b64decode(recs[1]["image_bytes"])
    assert exact == os.path.join(os.fsencode(latin1_dir), LATIN1)
    assert Image.open(exact).size == (24, 24)  # the bytes name the very file
    assert not recs[0].get("image_bytes")  # only names that need it carry it
    assert "Traceback" not in capsys.readouterr().err


def test_non_utf8_name_on_stdout_is_valid_utf8(latin1_dir, capsys):
    assert main(["caption", str(latin1_dir), *TINY, "-q"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and lines[1].split("\t")[0].endswith("img1_caf\\xe9.png")
    "\n".join(lines).encode("utf-8")  # no lone surrogates reached stdout


def test_tabs_and_newlines_in_names_keep_one_line_per_image(tmp_path, capsys):
    folder = tmp_path / "odd"
    folder.mkdir()
    Image.new("RGB", (20, 20)).save(folder / "a\tb.png")
    Image.new("RGB", (20, 20)).save(folder / "c\nd.png")
    (folder / "e\nmpty.jpg").write_bytes(b"")
    assert main(["caption", str(folder), *TINY, "-q"]) == 1
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert [line.split("\t")[0].rsplit("/", 1)[1] for line in lines] == ["a\\tb.png", "c\\nd.png"]
    assert all(len(line.split("\t")) == 3 for line in lines)
    err = captured.err.splitlines()
    assert err == [f"error: {folder}/e\\nmpty.jpg: empty file (0 bytes)"]  # one line, the path once


def test_error_line_names_the_image_once(tmp_path, capsys):
    empty = tmp_path / "zero.jpg"
    empty.write_bytes(b"")
    assert main(["caption", str(empty), *TINY]) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert err == [f"error: {empty}: empty file (0 bytes)"]


def test_record_and_error_line_escape_what_utf8_cannot_carry():
    from polycap.cli.output import error_line, record

    c = Caption("a \ud83d smile", "en", "m", source="caf\udce9\t.jpg", error="caf\udce9\t.jpg: bad")
    rec = record(c)
    json.dumps(rec, ensure_ascii=False).encode("utf-8")  # would raise on any surrogate left
    assert rec["image"] == "caf\\xe9\t.jpg" and rec["caption"] == "a \\ud83d smile"
    assert base64.b64decode(rec["image_bytes"]) == b"caf\xe9\t.jpg"
    assert error_line(c) == "error: caf\\xe9\\t.jpg: bad"
    assert set(record(Caption("x", "en", "m", source="ok.jpg"))) == {  # the server's keys, unchanged
        "image", "lang", "caption", "score", "model", "seconds", "error"
    }  # fmt: skip


def test_ascii_stdout_and_non_utf8_names_in_the_installed_cli(latin1_dir):
    """A real process, whose stdout/stderr encoding is ASCII: nothing may raise, all 3 records come."""
    (latin1_dir / "z\u00e9ro.jpg").write_bytes(b"")  # a failure whose name is not ASCII either
    env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    proc = subprocess.run(
        [sys.executable, "-m", "polycap", "caption", str(latin1_dir), *TINY, "-f", "jsonl"],
        capture_output=True,
        env=env,
        timeout=300,
    )
    stderr = proc.stderr.decode("ascii")
    assert proc.returncode == 1, stderr  # the one empty file failed, nothing else
    assert "Traceback" not in stderr and "z\\xe9ro.jpg: empty file" in stderr
    recs = [json.loads(line) for line in proc.stdout.decode("ascii").splitlines()]
    assert len(recs) == 4 and [bool(r["error"]) for r in recs] == [False, False, False, True]
    assert recs[1]["image"].endswith("img1_caf\\xe9.png")
