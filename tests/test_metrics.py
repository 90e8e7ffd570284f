"""polycap.eval.metrics: parity with pycocoevalcap (the acceptance test) and hand-checked cases.

The parity tests run pycocoevalcap's own PTBTokenizer and scorers, exactly as COCOEvalCap does,
on the Flickr8k val split and compare; they skip when the data, Java or pycocoevalcap are
missing.  The pycocoevalcap results are computed once per module (the jars start slowly).
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from polycap.eval.metrics import METRICS, score, score_report
from polycap.eval.metrics.chrf import chrf, sacrebleu_chrf
from polycap.eval.metrics.meteor import find_jar, meteor_config
from polycap.eval.metrics.ptb import ptb_tokenize_batch
from polycap.eval.metrics.rouge import lcs_length
from polycap.eval.metrics.tokenize import tokenize, unicode_tokenize

FLICKR8K = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "flickr8k"
CASES = ("human", "constant", "short")


def _need_reference() -> None:
    if not (FLICKR8K / "captions.jsonl").is_file():
        pytest.skip(f"Flickr8k not found at {FLICKR8K} (../shared beside the repo)")
    if shutil.which("java") is None:
        pytest.skip("java not on PATH: pycocoevalcap's tokenizer and METEOR need it")
    pytest.importorskip("pycocoevalcap", reason="pycocoevalcap not installed (pip install pycocoevalcap)")


@pytest.fixture(scope="module")
def val_items():
    _need_reference()
    from polycap.data.manifest import read_manifest

    items = read_manifest(FLICKR8K / "captions.jsonl", split="val", langs=["en"])
    assert len(items) == 1000
    return items


@pytest.fixture(scope="module")
def parity(val_items):
    """{case: (references, predictions, pycocoevalcap scores)} for the three baselines."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    refs = {it.key: it.captions["en"][1:] for it in val_items}
    firsts = {it.key: it.captions["en"][0] for it in val_items}
    predictions = {
        "human": firsts,
        "constant": dict.fromkeys(refs, "a dog runs through the grass"),
        "short": {k: " ".join(c.split()[:3]) for k, c in firsts.items()},
    }
    tokenizer = PTBTokenizer()
    gts = tokenizer.tokenize({k: [{"caption": c} for c in v] for k, v in refs.items()})
    meteor = Meteor()  # one jar for the three cases
    out = {}
    for case, preds in predictions.items():
        res = tokenizer.tokenize({k: [{"caption": preds[k]}] for k in refs})
        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        expected = {f"BLEU-{i + 1}": float(b) for i, b in enumerate(bleu)}
        expected["METEOR"] = float(meteor.compute_score(gts, res)[0])
        expected["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
        expected["CIDEr"] = float(Cider().compute_score(gts, res)[0])
        out[case] = (refs, preds, expected)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("case", CASES)
def test_parity_with_pycocoevalcap(parity, case):
    refs, preds, expected = parity[case]
    got = score(refs, preds)
    assert list(got) == list(METRICS)
    for name in ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L", "CIDEr"):
        # Bit-identical in practice; 1e-9 leaves room for another numpy's last bit.
        assert abs(got[name] - expected[name]) <= 1e-9, (name, got[name], expected[name])
    assert got["METEOR"] is not None
    assert abs(got["METEOR"] - expected["METEOR"]) <= 1e-4
    assert 0 < got["chrF"] <= 100


@pytest.mark.slow
def test_ptb_tokenizer_matches_the_jar_on_all_english_captions():
    """All 35,000 English Flickr8k captions (train + val) through the real Java PTBTokenizer."""
    _need_reference()
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    from polycap.data.manifest import read_manifest

    caps = [c for it in read_manifest(FLICKR8K / "captions.jsonl", langs=["en"]) for c in it.captions["en"]]
    assert len(caps) == 35000
    java = PTBTokenizer().tokenize({i: [{"caption": c}] for i, c in enumerate(caps)})
    ours = ptb_tokenize_batch(caps)
    mismatches = [(caps[i], java[i][0], ours[i]) for i in range(len(caps)) if java[i][0] != ours[i]]
    assert mismatches == []


def test_ptb_tokenizer_hand_cases():
    cases = {
        "A man's dog doesn't bark .": "a man 's dog does n't bark",
        'She said "hello" (twice) .': "she said hello -lrb- twice -rrb-",
        "A t-shirt-wearing man, 1,000 dogs & 3.5 km/h!": "a t-shirt-wearing man 1,000 dogs & 3.5 km/h",
        "They can't go to the U.S. The end...": "they ca n't go to the u.s. the end",
        "Cafe\u0301 na\u00efve -- wow": "cafe\u0301 na\u00efve wow",
        "The kids gonna play": "the kids gon na play",
        "5 7/8 inches": "5\u00a07/8 inches",  # one PTB token with a no-break space, as the jar
        "": "",
        "...": "",
    }
    assert ptb_tokenize_batch(list(cases)) == list(cases.values())


def test_unicode_tokenizer():
    assert tokenize("Ein Hund läuft über die Straße.", "de") == ["ein", "hund", "läuft", "über", "die", "strasse"]
    assert tokenize("Žluťoučký kůň úpěl!", "cs") == ["žluťoučký", "kůň", "úpěl"]
    assert tokenize("كلب بني يركض في العشب.", "ar") == ["كلب", "بني", "يركض", "في", "العشب"]
    assert tokenize("Собака бежит, «быстро».", "ru") == ["собака", "бежит", "быстро"]
    assert tokenize("L'homme : 5€ + ＡＢ", "fr") == ["l", "homme", "5", "€", "+", "ab"]
    # combining marks stay on their letter; NFKC composes them
    assert unicode_tokenize("Cafe\u0301") == "café"
    assert tokenize("...", "de") == []


def test_lcs_length_matches_the_dynamic_programme():
    import random

    rng = random.Random(0)
    for _ in range(300):
        a = [rng.choice("abcde") for _ in range(rng.randint(0, 12))]
        b = [rng.choice("abcde") for _ in range(rng.randint(0, 12))]
        table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
        for i in range(1, len(a) + 1):
            for j in range(1, len(b) + 1):
                table[i][j] = table[i - 1][j - 1] + 1 if a[i - 1] == b[j - 1] else max(table[i - 1][j], table[i][j - 1])
        assert lcs_length(a, b) == table[len(a)][len(b)]


NO_METEOR = ["BLEU", "ROUGE-L", "CIDEr", "chrF"]


def test_identical_captions_score_perfectly():
    refs = {1: ["a brown dog runs across the green grass"], 2: ["two children play football on a beach"]}
    preds = {k: v[0] for k, v in refs.items()}
    got = score(refs, preds, metrics=NO_METEOR)
    for k in ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "ROUGE-L"):
        assert got[k] == pytest.approx(1.0, abs=1e-6)
    assert got["CIDEr"] == pytest.approx(10.0)
    assert got["chrF"] == pytest.approx(100.0)


def test_empty_and_punctuation_only_predictions_score_zero():
    refs = {1: ["a dog runs .", "a brown dog ."], 2: ["a cat sleeps ."]}
    for empty in ("", "...", " ! , "):  # punctuation only: nothing left after tokenisation
        got = score(refs, {1: empty, 2: empty}, metrics=NO_METEOR)
        assert got["BLEU-1"] < 1e-9 and got["BLEU-4"] < 1e-9
        assert got["ROUGE-L"] == 0.0 and got["CIDEr"] == 0.0
    assert score(refs, {1: "", 2: ""}, metrics=["chrF"])["chrF"] == 0.0  # chrF reads raw text


def test_single_reference_by_hand():
    got = score({"x": ["a dog runs"]}, {"x": "a dog runs fast"}, metrics=["BLEU-1", "ROUGE-L"])
    assert got["BLEU-1"] == pytest.approx(3 / 4)  # no brevity penalty: the hypothesis is longer
    p, r = 3 / 4, 1.0
    assert got["ROUGE-L"] == pytest.approx((1 + 1.2**2) * p * r / (r + 1.2**2 * p))


def test_max_refs_uses_only_the_first_references():
    refs = {1: ["a dog on grass", "a cat on a sofa", "a cat sleeping"], 2: ["a red car", "a blue bus"]}
    preds = {1: "a cat on a sofa", 2: "a blue bus"}
    one = score(refs, preds, metrics=NO_METEOR, max_refs=1)
    assert one == score({k: v[:1] for k, v in refs.items()}, preds, metrics=NO_METEOR)
    assert score(refs, preds, metrics=NO_METEOR)["BLEU-4"] > one["BLEU-4"]


def test_chrf_equals_sacrebleu_with_ragged_references():
    hyps = ["Ein Hund läuft.", "", "كلب يركض", "A cat sleeps on a sofa", "Собака"]
    refs = [
        ["Ein Hund rennt.", "Der Hund läuft schnell."],
        ["leer"],
        ["كلب بني يركض في العشب", "كلب"],
        ["A cat is sleeping.", "The cat sleeps.", "cat"],
        ["Собака бежит"],
    ]
    assert chrf(hyps, refs) == pytest.approx(sacrebleu_chrf(hyps, refs), abs=1e-12)


def test_metric_selection_and_per_image_scores():
    refs = {"a": ["a dog runs on grass"], "b": ["a man rides a bike"], "c": ["kids play in water"]}
    preds = {"a": "a dog on grass", "b": "a man on a bike", "c": "children in water"}
    assert list(score(refs, preds, metrics=["bleu"])) == ["BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4"]
    report = score_report(refs, preds, metrics=["CIDEr"])
    per_image = report.per_image["CIDEr"]
    assert set(per_image) == set(preds)
    assert sum(per_image.values()) / 3 == pytest.approx(report.scores["CIDEr"])


def test_errors_are_clear():
    with pytest.raises(ValueError, match="no references: 'zzz'"):
        score({"a": ["x"]}, {"a": "x", "zzz": "y"})
    with pytest.raises(ValueError, match="no predictions"):
        score({"a": ["x"]}, {})
    with pytest.raises(ValueError, match="unknown metric"):
        score({"a": ["x"]}, {"a": "x"}, metrics=["SPICE"])
    with pytest.raises(ValueError, match="max_refs"):
        score({"a": ["x"]}, {"a": "x"}, max_refs=0)
    with pytest.raises(ValueError, match="no references"):
        score({"a": []}, {"a": "x"})


def test_meteor_unavailable_is_none_with_a_reason(monkeypatch):
    monkeypatch.setenv("POLYCAP_METEOR_JAR", "/nonexistent/meteor-1.5.jar")
    report = score_report({1: ["a dog"]}, {1: "a dog"}, metrics=["METEOR"])
    assert report.scores == {"METEOR": None}
    assert report.notes["METEOR"].startswith("unavailable: meteor-1.5.jar not found")


def test_meteor_language_policy(tmp_path):
    jar = tmp_path / "meteor-1.5.jar"
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "paraphrase-en.gz").write_bytes(b"")
    assert meteor_config("en", jar).args == ("-l", "en", "-norm")
    assert meteor_config("de", jar).args == ("-l", "de", "-norm", "-m", "exact stem")
    assert meteor_config("cs", jar).args == ("-l", "cz", "-norm", "-m", "exact")
    assert meteor_config("it", jar).args == ("-l", "it", "-lower", "-m", "exact stem")
    assert meteor_config("ar", jar).args == ("-l", "other", "-lower")
    assert "not comparable" in meteor_config("fr", jar).note


def _need_meteor() -> None:
    if shutil.which("java") is None or find_jar() is None:
        pytest.skip("java or meteor-1.5.jar missing")


@pytest.mark.slow
def test_meteor_survives_protocol_breaking_captions():
    _need_meteor()
    refs = {1: ["a dog ||| runs\non grass", "ein Hund läuft", "..."], 2: ["a cat\r\nsleeps"], 3: ["x"]}
    preds = {1: "a dog runs ||| fast", 2: "", 3: "über café"}
    got = score(refs, preds, metrics=["METEOR"])["METEOR"]
    assert got is not None and 0 < got < 1 and not math.isnan(got)
    de = score_report({1: ["Ein Hund läuft über die Straße"]}, {1: "Ein Hund rennt"}, ["METEOR"], lang="de")
    assert de.scores["METEOR"] is not None and "exact stem" in de.notes["METEOR"]


@pytest.mark.slow
def test_meteor_is_thread_safe():
    """Concurrent calls share one jar; each must get its own answer."""
    from concurrent.futures import ThreadPoolExecutor

    _need_meteor()
    jobs = [({i: ["a dog runs on the grass", "a brown dog"]}, {i: "a dog " + "runs " * (i % 3)}) for i in range(8)]
    alone = [score(r, p, metrics=["METEOR"])["METEOR"] for r, p in jobs]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda job: score(*job, metrics=["METEOR"])["METEOR"], jobs))
    assert together == alone


def test_report_helpers():
    from polycap.eval.report import build_language_report, format_table, markdown_report

    refs = {"a": ["a dog runs on grass", "a dog"], "b": ["a man rides a bike"], "c": ["kids play in water"]}
    preds = {"a": "a dog on grass", "b": "a man | on a bike", "c": ""}
    block = build_language_report(refs, preds, "en", max_refs=1)
    assert block["n_images"] == 3 and block["n_refs_per_image"] == 1
    assert set(block["metrics"]) == set(METRICS)
    report = {"model": "m", "languages": {"en": block}}
    table = format_table(report)
    assert table.splitlines()[0].split()[:4] == ["lang", "images", "refs", "BLEU-1"]
    assert "\nen " in table
    md = markdown_report(report, {"en": refs}, {"en": preds}, worst_best_k=1)
    assert "## en: worst 1 by CIDEr" in md and "## en: best 1 by CIDEr" in md
    assert "a man \\| on a bike" in md or "*(empty)*" in md
