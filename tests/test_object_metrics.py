"""Object mentions (CHAIR, recall, largest named) and the subject-named rate of ``polycap eval``/``score``.

Every expected number below is counted by hand from the tiny synthetic sets built here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from PIL import Image

from polycap.backends.base import Capabilities, Captioner
from polycap.cli import main
from polycap.data.manifest import read_manifest
from polycap.errors import PolycapError
from polycap.eval.metrics.objects import VOCABULARY_FILE, coco_vocabulary, object_scores
from polycap.eval.objects import match_images, object_truth, prepare_checks, read_coco_instances
from polycap.types import Caption

# The 80 category names of COCO's instances files, in category-id order.
COCO_NAMES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors", "teddy bear",
    "hair drier", "toothbrush",
)  # fmt: skip


# ---- the word list ------------------------------------------------------------------------------
def test_word_list_is_coco_80_with_each_form_naming_one_category():
    data = json.loads(VOCABULARY_FILE.read_text(encoding="utf-8"))
    names = [c["name"] for c in data["categories"]]
    assert names == list(COCO_NAMES) and len(names) == 80
    assert [c["id"] for c in data["categories"]][:12] == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13]  # COCO ids
    forms = [w for c in data["categories"] for w in c["words"]]
    assert len(forms) == len(set(forms)), "a word may name only one category"
    for c in data["categories"]:
        assert c["name"] in c["words"]  # every category is named by its own name
    assert set(data["compounds"].values()) - {None} <= set(names)


@pytest.mark.parametrize(
    ("caption", "named"),
    [
        ("Two puppies chase a beagle.", {"dog"}),  # synonyms and plurals, one object
        ("Men and women and children.", {"person"}),  # irregular plurals
        ("Mice near the knives and geese", {"mouse", "knife", "bird"}),
        ("A hot dog on a plate.", {"hot dog"}),  # phrase first: no dog
        ("A Teddy-Bear on the bed", {"teddy bear", "bed"}),  # hyphen, case; no bear
        ("Motor bikes by a fire hydrant and a stop sign", {"motorcycle", "fire hydrant", "stop sign"}),
        ("a baseball bat and a cell phone", {"baseball bat", "cell phone"}),  # no bat, no phone twice
        ("A baby elephant with adult elephants", {"elephant"}),  # 'baby' is no person here
        ("A baby sleeps", {"person"}),
        ("A passenger jet", {"airplane"}),  # 'passenger' is no person here
        ("A man on a jet ski", {"person", "boat"}),  # no airplane, no skis
        ("the seat of the toilet", {"toilet"}),  # CHAIR: no chair beside a toilet
        ("a toilet seat next to a chair", {"toilet", "chair"}),
        ("A man in an orange shirt", {"person"}),  # the colour, not the fruit
        ("An orange and white cat", {"cat"}),
        ("The ball is orange", {"sports ball"}),
        ("An orange on a table", {"orange", "dining table"}),
        ("Three oranges", {"orange"}),
        ("A stove top oven and a hair dryer", {"oven", "hair drier"}),
        ("A landscape with mountains.", set()),
    ],
)
def test_mentions(caption, named):
    assert coco_vocabulary().categories_in(caption) == named


def test_mentions_report_the_words_that_named_each_object():
    assert coco_vocabulary().mentions("A puppy and two dogs beside a man") == {"dog": "puppy", "person": "man"}


# ---- hand-computed scores on a tiny instances file -----------------------------------------------
def _instances(path: Path) -> Path:
    cats = {"person": 1, "motorcycle": 4, "cat": 17, "dog": 18, "frisbee": 34, "hot dog": 58, "bed": 65,
            "dining table": 67, "teddy bear": 88}  # fmt: skip
    images = [(1, "img1.jpg"), (2, "img2.jpg"), (3, "img3.jpg"), (4, "img4.jpg"), (5, "000000000005.jpg")]
    anns = [
        (1, "person", 500), (1, "dog", 2000), (1, "frisbee", 50), (2, "hot dog", 900), (2, "dining table", 3000),
        (3, "teddy bear", 100), (3, "bed", 1000), (4, "cat", 700), (5, "motorcycle", 10), (5, "person", 20),
    ]  # fmt: skip
    data = {
        "images": [{"id": i, "file_name": f"val2014/{name}", "width": 10, "height": 10} for i, name in images],
        "annotations": [{"id": n, "image_id": i, "category_id": cats[c], "area": a} for n, (i, c, a) in enumerate(anns)]
        + [{"id": 99, "image_id": 1, "area": 5}],  # no category: left out and counted
        "categories": [{"id": v, "name": k, "supercategory": "x"} for k, v in cats.items()],
    }
    path.write_text(json.dumps(data))
    return path


CAPTIONS = {
    "images/img1.jpg": "A man throws a frisbee to his puppies.",  # person, frisbee, dog: all there
    "images/img2.jpg": "A hot dog on a table next to a cat.",  # cat is not there
    "images/img3.jpg": "Two teddy bears.",  # names 1 of 2; the largest (bed) is not named
    "images/img4.jpg": "A blurry photo.",  # names nothing
    "photos/COCO_val2014_000000000005.jpg": "A person rides a motor bike past a horse.",  # horse is not there
    "images/img9.jpg": "A dog.",  # not in the instances file: not scored
}


@pytest.fixture
def coco_set(tmp_path) -> tuple[Path, Path]:
    """A manifest of 6 images (5 in the instances file) and the instances file; img2 has references."""
    manifest = tmp_path / "m.jsonl"
    with manifest.open("w") as f:
        for key in CAPTIONS:
            caps = {"en": ["A hot dog and a cat on a table", "lunch"]} if key.endswith("img2.jpg") else {}
            f.write(json.dumps({"image": key, "split": "val", "captions": caps}) + "\n")
    return manifest, _instances(tmp_path / "instances.json")


def test_instances_are_read_and_matched_by_file_name_and_id(coco_set):
    manifest, instances = coco_set
    coco = read_coco_instances(instances)
    assert coco.objects[1] == {"person", "dog", "frisbee"} and coco.largest == {
        1: "dog", 2: "dining table", 3: "bed", 4: "cat", 5: "person"
    }  # fmt: skip
    assert coco.n_bad == 1
    matched = match_images(read_manifest(manifest), coco)
    assert matched == {"images/img1.jpg": 1, "images/img2.jpg": 2, "images/img3.jpg": 3, "images/img4.jpg": 4,
                       "photos/COCO_val2014_000000000005.jpg": 5}  # fmt: skip


def test_chair_recall_and_largest_by_hand(coco_set):
    manifest, instances = coco_set
    truth = object_truth(read_manifest(manifest), instances, with_refs=False)
    assert truth.source == "instances" and truth.notes["n_unmatched"] == 1
    r = object_scores(CAPTIONS, truth.objects, truth.largest)
    assert r["n_images"] == 5 and r["n_mentions"] == 3 + 3 + 1 + 0 + 3 and r["n_hallucinated"] == 2
    assert r["CHAIRi"] == pytest.approx(2 / 10)
    assert r["CHAIRs"] == pytest.approx(2 / 5)  # img2 (cat), img5 (horse)
    assert r["recall"] == pytest.approx((1 + 1 + 0.5 + 0 + 1) / 5)
    assert r["recall_micro"] == pytest.approx((3 + 2 + 1 + 0 + 2) / (3 + 2 + 2 + 1 + 2))
    assert r["largest_named"] == pytest.approx(3 / 5)  # dog, table, person named; bed, cat not
    assert r["n_captions_without_objects"] == 1
    assert r["top_hallucinated"] == {"cat": 1, "horse": 1}


def test_reference_objects_count_as_present_by_default(coco_set):
    """As in CHAIR: img2's references name a cat, so its caption's cat is no hallucination."""
    manifest, instances = coco_set
    truth = object_truth(read_manifest(manifest), instances)
    assert truth.source == "instances+refs" and truth.objects["images/img2.jpg"] == {"hot dog", "dining table", "cat"}
    r = object_scores(CAPTIONS, truth.objects, truth.largest)
    assert r["CHAIRi"] == pytest.approx(1 / 10) and r["CHAIRs"] == pytest.approx(1 / 5)
    assert r["recall_micro"] == pytest.approx(9 / 11)


def test_refs_flavour_by_hand(tmp_path):
    """No instance annotations: the objects of an image are those its English references name."""
    manifest = tmp_path / "refs.jsonl"
    rows = {
        "a.jpg": ["A dog runs on the grass.", "A puppy plays with a ball."],  # dog, sports ball
        "b.jpg": ["A man rides a bike.", "A cyclist on a bicycle."],  # person, bicycle
        "c.jpg": ["A sunset over the sea."],  # nothing
    }
    manifest.write_text("".join(json.dumps({"image": k, "captions": {"en": v}}) + "\n" for k, v in rows.items()))
    truth = object_truth(read_manifest(manifest), "refs")
    assert truth.objects == {"a.jpg": {"dog", "sports ball"}, "b.jpg": {"person", "bicycle"}, "c.jpg": set()}
    preds = {"a.jpg": "Two dogs play with a frisbee.", "b.jpg": "A man on a bike.", "c.jpg": "A boat at sunset."}
    r = object_scores(preds, truth.objects, truth.largest)
    assert r["CHAIRi"] == pytest.approx(2 / 5)  # frisbee, boat of dog, frisbee, person, bicycle, boat
    assert r["CHAIRs"] == pytest.approx(2 / 3)
    assert r["recall"] == pytest.approx((1 / 2 + 1) / 2)  # c.jpg has no objects: not in recall
    assert r["largest_named"] is None


def test_no_english_and_bad_inputs_are_clear_errors(coco_set, tmp_path):
    manifest, instances = coco_set
    items = read_manifest(manifest)
    with pytest.raises(PolycapError, match="English"):
        prepare_checks(items, manifest, ["de"], objects="refs")
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": []}')
    with pytest.raises(PolycapError, match="not COCO instances JSON"):
        object_truth(items, bad)
    with pytest.raises(PolycapError, match="not found"):
        object_truth(items, tmp_path / "nope.json")
    with pytest.raises(PolycapError, match="--labels must be one of"):
        prepare_checks(items, manifest, ["en"], labels="cifar")


# ---- the CLI, end to end -------------------------------------------------------------------------
def _photos(folder: Path, keys) -> None:
    for i, key in enumerate(keys):
        path = folder / key
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (32 + i, 24), (40 * i % 255, 90, 200)).save(path, format="JPEG")


def test_score_with_objects(coco_set, tmp_path, capsys):
    manifest, instances = coco_set
    preds = tmp_path / "preds.jsonl"
    preds.write_text("".join(json.dumps({"image": k, "lang": "en", "caption": c}) + "\n" for k, c in CAPTIONS.items()))
    out = tmp_path / "r.json"
    argv = ["score", "--data", str(manifest), "--preds", str(preds), "--objects", str(instances), "--out", str(out)]
    assert main([*argv, "--no-ref-objects"]) == 0
    obj = json.loads(out.read_text())["languages"]["en"]["objects"]
    assert obj["CHAIRi"] == pytest.approx(0.2) and obj["largest_named"] == pytest.approx(0.6)
    assert obj["ground_truth"] == "instances" and obj["n_unmatched"] == 1
    assert "objects [en] (5 images, truth: instances): CHAIRi 0.2000" in capsys.readouterr().err
    assert main(argv) == 0  # refs on by default
    assert json.loads(out.read_text())["languages"]["en"]["objects"]["CHAIRi"] == pytest.approx(0.1)


def test_eval_with_objects_captions_annotated_images_and_scores_them(coco_set, tmp_path):
    """Images with instance annotations are captioned even without references, then scored."""
    manifest, instances = coco_set
    _photos(manifest.parent, CAPTIONS)
    report, preds = tmp_path / "r.json", tmp_path / "p.jsonl"
    argv = ["eval", "--model", "polycap-tiny-random", "--device", "cpu", "--data", str(manifest), "--lang", "en",
            "--beams", "1", "--max-tokens", "6", "--objects", str(instances), "--out", str(report),
            "--preds", str(preds), "-q"]  # fmt: skip
    assert main(argv) == 0
    r = json.loads(report.read_text())
    en = r["languages"]["en"]
    assert en["n_images"] == 1 and "CIDEr" in en["metrics"]  # only img2 has references
    written = {x["image"]: x["caption"] for x in map(json.loads, preds.read_text().splitlines())}
    assert set(written) == set(CAPTIONS) - {"images/img9.jpg"}  # the 5 annotated images, nothing else
    truth = object_truth(read_manifest(manifest), instances)
    expected = object_scores(written, truth.objects, truth.largest, truth.vocabulary)
    assert {k: en["objects"][k] for k in expected} == expected


def test_eval_objects_refs_on_a_caption_manifest(tmp_path):
    keys = ["p0.jpg", "p1.jpg"]
    _photos(tmp_path, keys)
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(
        json.dumps({"image": k, "split": "val", "captions": {"en": ["a dog", "a puppy"], "de": ["ein Hund"]}}) + "\n"
        for k in keys
    ))  # fmt: skip
    report = tmp_path / "r.json"
    argv = ["eval", "--model", "polycap-tiny-random", "--device", "cpu", "--data", str(manifest), "--lang", "en,de",
            "--beams", "1", "--max-tokens", "6", "--objects", "refs", "--out", str(report),
            "--markdown", str(tmp_path / "r.md"), "-q"]  # fmt: skip
    assert main(argv) == 0
    assert "- objects [en] (2 images, truth: refs): CHAIRi" in (tmp_path / "r.md").read_text()
    langs = json.loads(report.read_text())["languages"]
    assert langs["en"]["objects"]["n_images"] == 2 and langs["en"]["objects"]["ground_truth"] == "refs"
    assert langs["en"]["objects"]["mean_gt_objects"] == 1.0
    assert "objects" not in langs["de"]  # the COCO word list is English


def test_eval_objects_without_english_is_a_usage_error(tmp_path, capsys):
    _photos(tmp_path, ["p0.jpg"])
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(json.dumps({"image": "p0.jpg", "split": "val", "captions": {"de": ["ein Hund"]}}) + "\n")
    argv = ["eval", "--model", "polycap-tiny-random", "--device", "cpu", "--data", str(manifest), "--lang", "de",
            "--objects", "refs", "-q"]  # fmt: skip
    assert main(argv) == 2
    assert "the COCO word list is English" in capsys.readouterr().err


# ---- ImageNet labels: the subject-named rate -----------------------------------------------------
@pytest.fixture
def concepts():
    return pytest.importorskip("polycap.data.concepts", reason="the concept table has not landed yet")


class ColourCaptioner(Captioner):
    """Captions without a model: the caption is chosen by the photo's red channel."""

    def __init__(self, by_red: dict[int, dict[str, str]]):
        super().__init__("colour", Capabilities(languages=("en", "de")))
        self.by_red = by_red

    def caption_batch(self, images: Sequence[Image.Image], options) -> list[Caption]:
        return [Caption(self.by_red[im.getpixel((0, 0))[0]][options.lang], options.lang, self.name) for im in images]


def _labelled(tmp_path: Path, labels: list[int]) -> Path:
    path = tmp_path / "labels.jsonl"
    with path.open("w") as f:
        for i, index in enumerate(labels):
            Image.new("RGB", (16, 16), (10 * i, 0, 0)).save(tmp_path / f"c{i}.png")
            f.write(json.dumps({"image": f"c{i}.png", "class_index": index}) + "\n")
    return path


TABBY, GOLDEN_RETRIEVER, SCHOOL_BUS, ESPRESSO, BALD_EAGLE = 281, 207, 779, 967, 22


def test_subject_named_by_hand(tmp_path, concepts):
    from polycap.eval.evaluate import build_report, evaluate_model

    assert concepts.concept_of_class(BALD_EAGLE).parent == "bird"  # what the parent case below relies on
    captions = {
        0: {"en": "a tabby cat on a sofa", "de": "ein Tier auf dem Sofa"},  # tabby cat -> cat: en yes, de no
        10: {"en": "an animal on the grass", "de": "ein Hund im Gras"},  # golden retriever -> dog: en no, de yes
        20: {"en": "a yellow school bus", "de": "ein gelbes Fahrzeug"},  # school bus -> bus: en yes, de no
        30: {"en": "a cup on a table", "de": "eine Tasse Kaffee"},  # espresso -> coffee: en no, de yes
        40: {"en": "a bird on a branch", "de": "ein Adler"},  # bald eagle: en by its parent, de exactly
    }
    data = _labelled(tmp_path, [TABBY, GOLDEN_RETRIEVER, SCHOOL_BUS, ESPRESSO, BALD_EAGLE])
    items = read_manifest(data)
    model = ColourCaptioner(captions)
    checks = prepare_checks(items, data, ["en", "de"], labels="imagenet")
    options = model.make_options(lang="en", num_beams=1)
    preds, _, errors = evaluate_model(model, items, ["en", "de"], options, also=checks.also(["en", "de"]))
    report = build_report(items, preds, ["en", "de"], None, {}, errors)
    checks.add_to(report, preds, errors)
    en, de = (report["languages"][x]["subject_named"] for x in ("en", "de"))
    assert en["n_images"] == de["n_images"] == 5
    assert (en["n_named"], en["n_named_exact"], en["rate"]) == (3, 2, pytest.approx(3 / 5))
    assert (de["n_named"], de["n_named_exact"], de["rate"]) == (3, 3, pytest.approx(3 / 5))
    assert en["most_missed"] == {"dog": 1, "coffee": 1} and de["most_missed"] == {"cat": 1, "bus": 1}


def test_eval_labels_imagenet_end_to_end(tmp_path, concepts):
    """A labelled set without references: every image is captioned in every language and scored."""
    data = _labelled(tmp_path, [TABBY, GOLDEN_RETRIEVER, SCHOOL_BUS])
    report, preds = tmp_path / "r.json", tmp_path / "p.jsonl"
    argv = ["eval", "--model", "polycap-tiny-random", "--device", "cpu", "--data", str(data), "--labels", "imagenet",
            "--lang", "en,de", "--beams", "1", "--max-tokens", "6", "--out", str(report), "--preds", str(preds),
            "-q"]  # fmt: skip
    assert main(argv) == 0
    r = json.loads(report.read_text())
    assert r["split"] == "all"  # a labelled set has no splits: all of it by default
    written = [json.loads(x) for x in preds.read_text().splitlines()]
    assert len(written) == 6
    for lang in ("en", "de"):
        block = r["languages"][lang]["subject_named"]
        mine = {x["image"]: x["caption"] for x in written if x["lang"] == lang}
        named = sum(
            concepts.names_subject(mine[f"c{n}.png"], lang, concepts.concept_of_class(i).id)
            for n, i in enumerate([TABBY, GOLDEN_RETRIEVER, SCHOOL_BUS])
        )
        assert block["n_images"] == 3 and block["n_named"] == named
    rescore = ["score", "--data", str(data), "--preds", str(preds), "--labels", "imagenet", "--out", str(report)]
    assert main(rescore) == 0
    assert json.loads(report.read_text())["languages"]["de"]["subject_named"] == r["languages"]["de"]["subject_named"]


def test_labels_need_a_class_index(tmp_path, capsys):
    _photos(tmp_path, ["p0.jpg"])
    data = tmp_path / "labels.jsonl"
    data.write_text(json.dumps({"image": "p0.jpg", "class_index": "cat"}) + "\n")
    argv = ["eval", "--model", "polycap-tiny-random", "--device", "cpu", "--data", str(data), "--labels", "imagenet",
            "--lang", "en", "-q"]  # fmt: skip
    assert main(argv) == 2
    assert "labels.jsonl:1: --labels imagenet needs an integer class_index 0..999" in capsys.readouterr().err


def test_subject_named_in_a_language_the_table_lacks(concepts):
    from polycap.eval.objects import subject_scores

    block = subject_scores({"a.jpg": "un gatto"}, {"a.jpg": TABBY}, "it")
    assert block["rate"] is None and block["n_images"] == 1 and "no language 'it'" in block["note"]
