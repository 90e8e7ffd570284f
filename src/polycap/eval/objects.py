"""Object and subject checks for ``polycap eval`` / ``polycap score``: what an image holds, and was it named.

Two questions users ask of a captioner besides n-gram overlap:

* **Does it name what is there, and only that?**  (``--objects``) The objects of an image come from
  COCO-format instance annotations (``--objects instances.json``: the categories of the image's
  annotations, and by default also the COCO objects its English references name, as Rohrbach et
  al. 2018 do for CHAIR) or from the references alone (``--objects refs``: what one can measure on
  a set without instance annotations, e.g. Flickr8k).  Scores are those of
  :func:`polycap.eval.metrics.objects.object_scores`; English captions only, because the COCO word
  list is English.
* **Does it name the photo's subject?**  (``--labels imagenet``) For a set whose manifest lines carry
  an ImageNet-1k ``class_index`` (e.g. ``ood-dev/imagenet-sample/labels.jsonl``), the share of images
  whose caption names the class's basic-level concept (``cat`` for "tabby cat") in that language,
  through the concept table of :mod:`polycap.data.concepts`.

Manifest images are matched to COCO images by file name (the manifest's ``image`` basename equals
the basename of ``images[].file_name``), else by id (the trailing digits of the file name's stem,
``COCO_val2014_000000027440.jpg`` -> 27440, equal ``images[].id``), so a manifest of 2014 names
matches 2017 annotations and back.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from polycap.data.manifest import ManifestItem
from polycap.errors import PolycapError
from polycap.eval.metrics.objects import ObjectVocabulary, coco_vocabulary, object_scores
from polycap.eval.metrics.tokenize import is_english

REFS = "refs"  # --objects refs: the objects named in each image's English references
LABEL_SETS = ("imagenet",)  # --labels: what a manifest's class_index indexes
VOCABULARY_NAME = "COCO-80, Rohrbach et al. 2018 synonyms (polycap/eval/metrics/coco_objects.json)"


@dataclass
class CocoInstances:
    """What a COCO instances file says about each image: its object categories and its largest one."""

    by_file: dict[str, int]  # file-name basename -> image id
    objects: dict[int, set[str]]  # image id -> category names of its annotations
    largest: dict[int, str]  # image id -> category of its largest annotation (by area)
    names: list[str]  # every category name, in file order
    n_bad: int = 0  # annotations left out (no image, no known category, no area)


@dataclass
class ObjectTruth:
    """The objects of each manifest image (by manifest key), and where they came from."""

    objects: dict[str, set[str]]
    largest: dict[str, str] | None
    source: str  # "instances", "instances+refs" or "refs"
    vocabulary: ObjectVocabulary
    notes: dict[str, Any] = field(default_factory=dict)


def _load_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise PolycapError(f"{what} not found: {path}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PolycapError(f"{path}: not a JSON file ({e})") from e


def _area(ann: Mapping[str, Any]) -> float:
    if isinstance(ann.get("area"), (int, float)):
        return float(ann["area"])
    box = ann.get("bbox")
    if isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box):
        return float(box[2] * box[3])
    raise TypeError("no area or bbox")


def read_coco_instances(path: str | Path) -> CocoInstances:
    """Read COCO-format instance annotations (``images``, ``annotations``, ``categories``).

    A malformed file raises :class:`PolycapError`; a malformed annotation is left out and counted.
    """
    path = Path(path)
    data = _load_json(path, "instance annotations")
    try:
        names_by_id = {c["id"]: str(c["name"]) for c in data["categories"]}
        by_file = {PurePath(str(im["file_name"])).name: im["id"] for im in data["images"]}
        ids = {im["id"] for im in data["images"]}
        anns = list(data["annotations"])
    except (KeyError, TypeError) as e:
        raise PolycapError(
            f"{path}: not COCO instances JSON ({e!r} missing or malformed); need images[].id/file_name, "
            "annotations[], categories[].id/name"
        ) from e
    objects: dict[int, set[str]] = {i: set() for i in ids}
    best: dict[int, tuple[float, str]] = {}
    bad = 0
    for ann in anns:
        try:
            image, name, area = ann["image_id"], names_by_id[ann["category_id"]], _area(ann)
            objects[image].add(name)
        except (KeyError, TypeError):
            bad += 1
            continue
        if image not in best or area > best[image][0]:
            best[image] = (area, name)
    largest = {i: name for i, (_, name) in best.items()}
    return CocoInstances(by_file, objects, largest, list(names_by_id.values()), bad)


_TRAILING_ID = re.compile(r"(\d+)$")


def match_images(items: Iterable[ManifestItem], coco: CocoInstances) -> dict[str, int]:
    """{manifest key: COCO image id}: by file name, else by the file name's trailing number."""
    out = {}
    for it in items:
        name = PurePath(it.key).name
        if name in coco.by_file:
            out[it.key] = coco.by_file[name]
            continue
        m = _TRAILING_ID.search(PurePath(name).stem)
        if m and int(m.group(1)) in coco.objects:
            out[it.key] = int(m.group(1))
    return out


def _ref_objects(items: Iterable[ManifestItem], vocab: ObjectVocabulary, max_refs: int | None) -> dict[str, set[str]]:
    """{key: COCO objects its English references name} for items with English references."""
    out = {}
    for it in items:
        refs = [c for c in it.captions.get("en", []) if c.strip()][:max_refs]
        if refs:
            out[it.key] = set().union(*(vocab.categories_in(r) for r in refs))
    return out


def object_truth(
    items: list[ManifestItem], source: str | Path, with_refs: bool = True, max_refs: int | None = None
) -> ObjectTruth:
    """The ground-truth objects of each item: from ``source`` (an instances file, or ``"refs"``).

    ``with_refs`` (instances only) adds the objects the item's English references name; it is what
    CHAIR does, because instance annotations miss objects a caption may rightly name.
    """
    vocab = coco_vocabulary()
    if str(source) == REFS:
        objects = _ref_objects(items, vocab, max_refs)
        if not objects:
            raise PolycapError("--objects refs needs English references ('en' captions) in the manifest")
        return ObjectTruth(objects, None, REFS, vocab, {"n_without_refs": len(items) - len(objects)})
    coco = read_coco_instances(source)
    vocab = vocab.with_names(coco.names)
    matched = match_images(items, coco)
    if not matched:
        raise PolycapError(f"no manifest image matches an image of {source} (by file name or id)")
    objects = {key: set(coco.objects[i]) for key, i in matched.items()}
    largest = {key: coco.largest[i] for key, i in matched.items() if i in coco.largest}
    if with_refs:
        for key, named in _ref_objects(items, vocab, max_refs).items():
            if key in objects:
                objects[key] |= named
    notes = {"n_unmatched": sum(it.key not in matched for it in items), "n_bad_annotations": coco.n_bad}
    unknown = [n for n in coco.names if n not in coco_vocabulary().ids]
    if unknown:
        notes["categories_named_by_themselves"] = unknown  # not COCO-80: matched by their own name
    return ObjectTruth(objects, largest, "instances+refs" if with_refs else "instances", vocab, notes)


def _block(report: dict[str, Any], lang: str, n_errors: Mapping[str, int] | None) -> dict[str, Any]:
    """The report's block for ``lang``; a bare one for languages without references."""
    languages = report.setdefault("languages", {})
    if lang not in languages:
        languages[lang] = {"n_images": 0, "n_refs_per_image": 0, "metrics": {}}
        if n_errors is not None:
            languages[lang]["n_errors"] = n_errors.get(lang, 0)
    return languages[lang]


def add_object_scores(
    report: dict[str, Any],
    predictions: Mapping[str, Mapping[str, str]],
    truth: ObjectTruth,
    n_errors: Mapping[str, int] | None = None,
) -> None:
    """Add ``languages[lang]["objects"]`` for each English language predicted."""
    for lang, preds in predictions.items():
        if not is_english(lang) or not preds:
            continue
        block = object_scores(preds, truth.objects, truth.largest, truth.vocabulary)
        block["n_without_prediction"] = sum(k not in preds for k in truth.objects)
        block.update(ground_truth=truth.source, vocabulary=VOCABULARY_NAME, **truth.notes)
        entry = _block(report, lang, n_errors)
        entry["objects"] = block
        entry["n_images"] = entry["n_images"] or block["n_images"]


def english_only(langs: Iterable[str]) -> list[str]:
    """The English languages of ``langs``; an error when there is none (the COCO list is English)."""
    out = [x for x in langs if is_english(x)]
    if not out:
        raise PolycapError("--objects scores English captions (the COCO word list is English); add en to --lang")
    return out


def read_class_labels(path: str | Path, keys: Iterable[str] | None = None) -> dict[str, int]:
    """{image: class_index} from a labelled manifest (``{"image", "class_index", ...}`` per line)."""
    path = Path(path)
    wanted = set(keys) if keys is not None else None
    out: dict[str, int] = {}
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            rec = json.loads(line)  # read_manifest has already checked the lines parse
            if wanted is not None and rec.get("image") not in wanted:
                continue
            index = rec.get("class_index")
            if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < 1000:
                raise PolycapError(f"{path}:{lineno}: --labels imagenet needs an integer class_index 0..999")
            out[rec["image"]] = index
    if not out:
        raise PolycapError(f"no labelled images in {path}")
    return out


def subject_scores(predictions: Mapping[str, str], labels: Mapping[str, int], lang: str, top_k: int = 10) -> dict:
    """Share of captions that name their image's concept in ``lang``, over the labelled images predicted.

    ``rate``: the caption names the class's concept or its broader parent ("a bird" for an eagle), as
    :func:`polycap.data.concepts.names_subject` decides; ``rate_exact``: the concept itself.
    ``most_missed`` lists the concepts most often not named. A language the concept table lacks
    gets ``rate`` None and a note.
    """
    from polycap.data.concepts import LANGUAGES, concept_of_class, mentions

    keys = [k for k in predictions if k in labels]
    if lang not in LANGUAGES:
        note = f"no language {lang!r} in the concept table ({', '.join(LANGUAGES)})"
        return {"rate": None, "rate_exact": None, "n_named": 0, "n_images": len(keys), "note": note}
    named = exact = 0
    missed: Counter[str] = Counter()
    for key in keys:
        concept = concept_of_class(labels[key])
        found = mentions(predictions[key], lang)
        exact += concept.id in found
        if concept.id in found or (concept.parent is not None and concept.parent in found):
            named += 1
        else:
            missed[concept.id] += 1
    return {
        "rate": named / len(keys) if keys else None,
        "rate_exact": exact / len(keys) if keys else None,
        "n_named": named,
        "n_named_exact": exact,
        "n_images": len(keys),
        "most_missed": dict(missed.most_common(top_k)),
    }


def add_subject_scores(
    report: dict[str, Any],
    predictions: Mapping[str, Mapping[str, str]],
    labels: Mapping[str, int],
    n_errors: Mapping[str, int] | None = None,
) -> None:
    """Add ``languages[lang]["subject_named"]`` for each language predicted."""
    for lang, preds in predictions.items():
        if not preds:
            continue
        block = subject_scores(preds, labels, lang)
        entry = _block(report, lang, n_errors)
        entry["subject_named"] = block
        entry["n_images"] = entry["n_images"] or len([k for k in preds if k in labels])


@dataclass
class Checks:
    """What ``--objects`` and ``--labels`` add to an evaluation: more images to caption, more scores."""

    truth: ObjectTruth | None = None
    labels: dict[str, int] | None = None

    def also(self, langs: Iterable[str]) -> dict[str, set[str]]:
        """{lang: images to caption even without references in that language}."""
        out: dict[str, set[str]] = {}
        for lang in langs:
            keys = set(self.labels or ())
            if self.truth is not None and is_english(lang):
                keys |= set(self.truth.objects)
            if keys:
                out[lang] = keys
        return out

    def add_to(
        self,
        report: dict[str, Any],
        predictions: Mapping[str, Mapping[str, str]],
        n_errors: Mapping[str, int] | None = None,
    ) -> None:
        if self.truth is not None:
            add_object_scores(report, predictions, self.truth, n_errors)
        if self.labels is not None:
            add_subject_scores(report, predictions, self.labels, n_errors)


def prepare_checks(
    items: list[ManifestItem],
    data: str | Path,
    langs: Iterable[str],
    objects: str | Path | None = None,
    labels: str | None = None,
    ref_objects: bool = True,
    max_refs: int | None = None,
) -> Checks:
    """Read what ``--objects`` / ``--labels`` need; clear errors for options that cannot apply."""
    checks = Checks()
    if objects is not None:
        english_only(langs)
        checks.truth = object_truth(items, objects, ref_objects, max_refs)
    if labels is not None:
        if labels not in LABEL_SETS:
            raise PolycapError(f"--labels must be one of {', '.join(LABEL_SETS)}, got {labels!r}")
        checks.labels = read_class_labels(data, {it.key for it in items})
    return checks
