"""``polycap eval`` (caption a manifest split and score it) and ``polycap score`` (score given predictions)."""

from __future__ import annotations

import json
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import typer

from polycap.cli import gen_flags as F
from polycap.cli.common import err, load_model, split_langs, usage_error
from polycap.errors import OptionError, PolycapError

# Shared by eval and score: object mentions (CHAIR, recall, largest named) and subject named.
OBJECTS = typer.Option(
    None, "--objects",
    help="Score object mentions in English captions (CHAIRi/CHAIRs, recall, largest object named) against "
    "COCO instance annotations (a COCO-format instances.json), or 'refs': the COCO objects the references name.",
)
REF_OBJECTS = typer.Option(
    True, "--ref-objects/--no-ref-objects",
    help="With --objects instances.json: also count the objects the English references name as present (CHAIR).",
)
LABELS = typer.Option(
    None, "--labels",
    help="The manifest's class_index labels are 'imagenet' (1k) classes: report the share of captions naming "
    "the class's concept, per language; images need no references.",
)


def _default_langs(lang: str | None, items, supported, labelled: bool) -> list[str]:
    """--lang, else the languages with references the model speaks (a labelled set: all it speaks)."""
    from polycap.eval.evaluate import available_languages

    langs = split_langs(lang) or [x for x in available_languages(items) if supported is None or x in supported]
    if not langs and labelled:
        langs = list(supported or ("en",))
    if not langs:
        raise OptionError("no language to evaluate: the manifest has no references the model can write; pass --lang")
    return langs


def _items(data: Path, split: str | None, limit: int | None):
    from polycap.data.manifest import read_manifest

    items = read_manifest(data, split=split)
    if not items:
        raise usage_error(f"no images in {data}" + (f" with split {split!r}" if split else ""))
    return items[:limit] if limit else items


def _write_report(report: dict, out: Path | None, markdown: Path | None, refs_preds=None) -> None:
    from polycap.eval.report import format_table, markdown_report

    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    err.print(format_table(report), markup=False, highlight=False)
    for lang, r in report["languages"].items():
        if r.get("n_missing") or r.get("n_errors"):
            err.print(
                f"note: {lang}: {r.get('n_missing', 0)} images without prediction, {r.get('n_errors', 0)} failed",
                markup=False,
            )
    if markdown and refs_preds is not None:
        markdown.write_text(markdown_report(report, *refs_preds), encoding="utf-8")


def _refs_preds(items, preds, langs, refs):
    from polycap.eval.evaluate import references_for

    return (
        {lang: references_for(items, lang, refs) for lang in langs},
        {lang: preds.get(lang, {}) for lang in langs},
    )


@F.generation_flags(F.EVAL_DEFAULTS)
def eval_cmd(
    data: Path = typer.Option(..., "--data", help="Caption manifest (JSON Lines)."),
    model: str | None = typer.Option(None, "--model", "-m", help="Model name, scheme:ref or folder."),
    split: str | None = typer.Option(
        None, "--split", help="Manifest split to evaluate ('' for all; default: val, or all with --labels)."
    ),
    lang: str | None = typer.Option(None, "--lang", "-l", help="Languages, comma-separated (default: all shared)."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Only the first N images of the split."),
    refs: int | None = typer.Option(None, "--refs", min=1, help="Use only the first N references per image."),
    generation: dict[str, Any] | None = None,
    batch_size: int = typer.Option(16, "--batch-size", min=1),
    out: Path | None = typer.Option(None, "--out", "-o", help="Report JSON."),
    preds: Path | None = typer.Option(None, "--preds", help="Write predictions (JSON Lines) as they are made."),
    markdown: Path | None = typer.Option(None, "--markdown", help="Markdown report with worst and best captions."),
    objects: str | None = OBJECTS,
    ref_objects: bool = REF_OBJECTS,
    labels: str | None = LABELS,
    concepts: str | None = F.CONCEPTS,
    device: str = typer.Option("auto", "--device"),
    quiet: bool = typer.Option(False, "--quiet", "-q"),
) -> None:
    """Caption every image of a split once per language and score against its references."""
    from polycap.eval.evaluate import build_report, caption_targets, evaluate_model
    from polycap.eval.objects import prepare_checks

    split = ("val" if labels is None else "") if split is None else split
    try:
        items = _items(data, split or None, limit)
        captioner = load_model(model, device, quiet, **({"concepts": concepts} if concepts else {}))
        langs = _default_langs(lang, items, captioner.capabilities.languages, labels is not None)
        checks = prepare_checks(items, data, langs, objects, labels, ref_objects, refs)
        options = captioner.make_options(lang=langs[0], **(generation or {}))
        for x in langs:
            captioner.make_options(options, lang=x)
        also = checks.also(langs)
        total = sum(len(keys) for keys in caption_targets(items, langs, refs, also).values())
        with _progress(total, quiet) as advance, (preds.open("w", encoding="utf-8") if preds else nullcontext()) as pf:
            predictions, speed, errors = evaluate_model(
                captioner, items, langs, options, refs, batch_size, pf, advance, also
            )
        meta = {"model": captioner.name, "data": str(data), "split": split or "all",
                "options": {**options.to_dict(), "max_refs": refs, "limit": limit}, "speed": speed}
        report = build_report(items, predictions, langs, refs, meta, errors)
        checks.add_to(report, predictions, errors)
    except (OptionError, PolycapError) as e:
        raise usage_error(str(e)) from e
    _write_report(report, out, markdown, _refs_preds(items, predictions, langs, refs))


def score_cmd(
    data: Path = typer.Option(..., "--data", help="Caption manifest (JSON Lines) with the references."),
    preds: Path = typer.Option(
        ..., "--preds",
        help='Predictions: {"image", "lang", "caption"} per line, polycap batch records (JSONL, Parquet), '
        'or COCO results JSON: a list of {"image_id", "caption"} (with --lang).',
    ),
    split: str | None = typer.Option(
        None, "--split", help="Manifest split ('' for all; default: the splits of the predicted images)."
    ),
    lang: str | None = typer.Option(None, "--lang", "-l", help="Languages to score (default: all predicted)."),
    refs: int | None = typer.Option(None, "--refs", min=1, help="Use only the first N references per image."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Report JSON."),
    markdown: Path | None = typer.Option(None, "--markdown", help="Markdown report with worst and best captions."),
    objects: str | None = OBJECTS,
    ref_objects: bool = REF_OBJECTS,
    labels: str | None = LABELS,
) -> None:
    """Score existing predictions from any system on the same footing as ``polycap eval``."""
    from polycap.data.manifest import read_manifest
    from polycap.eval.evaluate import build_report, load_predictions
    from polycap.eval.objects import prepare_checks

    try:
        given = split_langs(lang)
        predictions, failed = load_predictions(preds, read_manifest(data), given)
        items, split_name = _scored_items(data, split, predictions)
        langs = given or list(dict.fromkeys([*predictions, *failed]))
        checks = prepare_checks(items, data, langs, objects, labels, ref_objects, refs)
        meta = {"model": str(preds), "data": str(data), "split": split_name,
                "options": {"max_refs": refs}, "speed": None}
        report = build_report(items, predictions, langs, refs, meta, failed)
        checks.add_to(report, {x: predictions.get(x, {}) for x in langs})
    except (OptionError, PolycapError, OSError) as e:
        raise usage_error(str(e)) from e
    if not report["languages"]:
        raise usage_error(f"no predictions in {preds} match images with references in {data} (split {split_name!r})")
    _write_report(report, out, markdown, _refs_preds(items, predictions, langs, refs))


def _scored_items(data: Path, split: str | None, predictions: dict[str, dict[str, str]]):
    """The manifest items to score against, and the split name for the report.

    With ``--split`` given, that split ('' for all). Without, every split a predicted image belongs
    to: predictions for the test split are scored on it, and the split's other images still count
    as missing, so a partial run shows.
    """
    from polycap.data.manifest import read_manifest

    if split is not None:
        return _items(data, split or None, None), split or "all"
    items = read_manifest(data)
    named = {key for by_image in predictions.values() for key in by_image}
    splits = {it.split for it in items if it.key in named}
    if not splits:
        raise usage_error(f"none of the predicted images is in {data} (predictions name images by its 'image' "
                          "field, or by the image file)")
    chosen = [it for it in items if it.split in splits]
    return chosen, ",".join(sorted(str(s) for s in splits if s is not None)) or "all"


def _progress(total: int, quiet: bool):
    """A context manager yielding ``advance(n)``: a rich progress bar on a terminal, else nothing."""
    from contextlib import contextmanager

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    @contextmanager
    def run():
        show = not quiet and sys.stderr.isatty()
        bar = Progress(TextColumn("evaluating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                       console=err, disable=not show, transient=True)
        with bar:
            task = bar.add_task("eval", total=total)
            yield lambda n: bar.advance(task, n)

    return run()
