"""`polycap eval` and `polycap score` end to end on real Flickr8k val images with the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from polycap.cli import main

KEYS = {"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "chrF"}


@pytest.fixture(scope="module")
def val_manifest(flickr8k, tmp_path_factory) -> Path:
    """12 val images: 10 with English and German references, 2 with English only."""
    lines = [json.loads(x) for x in (flickr8k / "captions.jsonl").open(encoding="utf-8")]
    val = [x for x in lines if x["split"] == "val" and "de" in x["captions"]][:12]
    for x in val[10:]:
        del x["captions"]["de"]
    path = tmp_path_factory.mktemp("eval") / "m.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for x in val:
            f.write(json.dumps({**x, "image": str(flickr8k / x["image"])}, ensure_ascii=False) + "\n")
    return path


def test_eval_then_score_agree(val_manifest, tmp_path, capsys):
    report, preds, md = tmp_path / "r.json", tmp_path / "p.jsonl", tmp_path / "r.md"
    argv = ["eval", "--model", "polycap-tiny-random", "--device", "cpu", "--data", str(val_manifest),
            "--lang", "en,de", "--beams", "2", "--max-tokens", "8", "--out", str(report), "--preds", str(preds),
            "--markdown", str(md), "-q"]
    assert main(argv) == 0
    r = json.loads(report.read_text())
    assert set(r) >= {"model", "data", "split", "options", "languages", "speed", "polycap_version"}
    assert r["model"] == "polycap-tiny-random" and r["split"] == "val" and r["options"]["num_beams"] == 2
    assert r["languages"]["en"]["n_images"] == 12 and r["languages"]["de"]["n_images"] == 10  # no de refs: skipped
    assert r["languages"]["en"]["n_refs_per_image"] == 5.0
    for lang in ("en", "de"):
        m = r["languages"][lang]["metrics"]
        assert set(m) == KEYS
        assert all(0 <= m[k] <= 1 for k in ("BLEU-1", "BLEU-4", "ROUGE-L")) and 0 <= m["chrF"] <= 100
    assert r["speed"]["images_per_s"] > 0 and r["speed"]["runtime"] in ("onnx", "torch")
    lines = [json.loads(x) for x in preds.read_text().splitlines()]
    assert len(lines) == 22 and {x["lang"] for x in lines} == {"en", "de"}
    assert "| CIDEr" in md.read_text() or "CIDEr" in md.read_text()
    assert "BLEU-4" in capsys.readouterr().err  # the readable table

    again = tmp_path / "r2.json"
    assert main(["score", "--data", str(val_manifest), "--preds", str(preds), "--out", str(again)]) == 0
    r2 = json.loads(again.read_text())
    for lang in ("en", "de"):
        assert r2["languages"][lang]["metrics"] == pytest.approx(r["languages"][lang]["metrics"])


def test_score_human_caption_beats_constant_and_reports_coverage(val_manifest, tmp_path):
    items = [json.loads(x) for x in val_manifest.read_text().splitlines()]
    human, const = tmp_path / "h.jsonl", tmp_path / "c.jsonl"
    with human.open("w") as h, const.open("w") as c:
        for x in items[:8]:  # a partial run: 8 of 12 images
            h.write(json.dumps({"image": x["image"], "lang": "en", "caption": x["captions"]["en"][0]}) + "\n")
            c.write(json.dumps({"image": x["image"], "lang": "en", "caption": "a dog runs on the grass"}) + "\n")
    out_h, out_c = tmp_path / "h.json", tmp_path / "c.json"
    assert main(["score", "--data", str(val_manifest), "--preds", str(human), "--out", str(out_h)]) == 0
    assert main(["score", "--data", str(val_manifest), "--preds", str(const), "--out", str(out_c)]) == 0
    h, c = (json.loads(p.read_text())["languages"]["en"] for p in (out_h, out_c))
    assert h["n_missing"] == 4 and h["n_images"] == 8  # coverage is reported, not hidden
    assert h["metrics"]["CIDEr"] > c["metrics"]["CIDEr"] and h["metrics"]["BLEU-4"] > c["metrics"]["BLEU-4"]


def test_score_bad_inputs_are_usage_errors(val_manifest, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"image": "x"}\n')
    assert main(["score", "--data", str(val_manifest), "--preds", str(bad)]) == 2
    assert "bad prediction line" in capsys.readouterr().err
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"image": "nope.jpg", "lang": "en", "caption": "x"}) + "\n")
    assert main(["score", "--data", str(val_manifest), "--preds", str(other)]) == 2
    assert main(["eval", "--data", str(tmp_path / "missing.jsonl"), "--model", "polycap-tiny-random"]) == 2


@pytest.fixture
def test_split_manifest(tmp_path) -> Path:
    """References only (score never opens images): 3 test images and 2 val images."""
    path = tmp_path / "refs.jsonl"
    rows = [(f"t{i}.jpg", "test") for i in range(3)] + [(f"v{i}.jpg", "val") for i in range(2)]
    path.write_text("".join(
        json.dumps({"image": key, "split": split, "captions": {"en": ["a dog runs on the grass", "a dog"]}}) + "\n"
        for key, split in rows
    ))  # fmt: skip
    return path


def _preds(tmp_path, keys) -> Path:
    path = tmp_path / "preds.jsonl"
    path.write_text("".join(json.dumps({"image": k, "lang": "en", "caption": "a dog runs"}) + "\n" for k in keys))
    return path


def test_score_uses_the_split_of_the_predicted_images(test_split_manifest, tmp_path, capsys):
    """Predictions for the test split score against it without --split (it used to look only at 'val')."""
    preds, report = _preds(tmp_path, ["t0.jpg", "t1.jpg"]), tmp_path / "r.json"
    assert main(["score", "--data", str(test_split_manifest), "--preds", str(preds), "--out", str(report)]) == 0
    r = json.loads(report.read_text())
    assert r["split"] == "test"
    en = r["languages"]["en"]
    assert en["n_images"] == 2 and en["n_missing"] == 1  # t2 has no prediction: still counted; val is not
    assert "BLEU-4" in capsys.readouterr().err


def test_score_split_flag_still_chooses(test_split_manifest, tmp_path, capsys):
    preds, report = _preds(tmp_path, ["t0.jpg", "t1.jpg"]), tmp_path / "r.json"
    base = ["score", "--data", str(test_split_manifest), "--preds", str(preds), "--out", str(report)]
    assert main([*base, "--split", ""]) == 0  # every split: the two val images count as missing too
    r = json.loads(report.read_text())
    assert r["split"] == "all" and r["languages"]["en"]["n_missing"] == 3
    assert main([*base, "--split", "val"]) == 2
    assert "no predictions in" in capsys.readouterr().err
    unknown = _preds(tmp_path, ["elsewhere.jpg"])
    assert main(["score", "--data", str(test_split_manifest), "--preds", str(unknown)]) == 2
    assert "none of the predicted images is in" in capsys.readouterr().err
