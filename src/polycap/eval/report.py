"""Evaluation reports: the per-language JSON block, a plain-text table, a Markdown report.

Pure helpers around :func:`polycap.eval.metrics.score_report`; running models is
:mod:`polycap.eval.evaluate`'s job.  A full report is ``{..., "languages": {lang: block}}``
where a block is what :func:`build_language_report` returns.  The Markdown report lists each
language's worst and best captions by per-image CIDEr, because averages hide failure modes (a
model that describes every dog as "a dog runs through the grass" scores fine on BLEU-1).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

from polycap.eval.metrics import METRICS, score_report

# How each metric is printed: decimals on its native scale (chrF is 0-100, CIDEr ~0-10).
_DECIMALS = {"CIDEr": 3, "chrF": 2}


def build_language_report(
    references: Mapping[Hashable, Sequence[str]],
    predictions: Mapping[Hashable, str],
    lang: str,
    max_refs: int | None = None,
) -> dict[str, Any]:
    """Score one language: ``{"n_images", "n_refs_per_image", "metrics", "notes"}``.

    ``n_refs_per_image`` is the mean number of references actually used (after ``max_refs``);
    ``notes`` says why a metric is None and how METEOR was configured for the language.
    """
    report = score_report(references, predictions, lang=lang, max_refs=max_refs)
    used = [len(references[k][:max_refs]) for k in predictions]
    return {
        "n_images": len(predictions),
        "n_refs_per_image": round(sum(used) / len(used), 3),
        "metrics": report.scores,
        "notes": report.notes,
    }


def _languages(report: Mapping[str, Any]) -> Mapping[str, Mapping[str, Any]]:
    return report.get("languages", report)


def _fmt(name: str, value: float | None) -> str:
    return "-" if value is None else f"{value:.{_DECIMALS.get(name, 4)}f}"


def _rows(report: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and one row per language (metrics no language has are left out)."""
    langs = _languages(report)
    names = [m for m in METRICS if any(m in (b.get("metrics") or {}) for b in langs.values())]
    header = ["lang", "images", "refs", *names]
    rows = []
    for lang, block in langs.items():
        metrics = block.get("metrics") or {}
        rows.append(
            [
                lang,
                str(block.get("n_images", "")),
                f"{block.get('n_refs_per_image', 0):g}",
                *[_fmt(m, metrics.get(m)) for m in names],
            ]
        )
    return header, rows


def format_table(report: Mapping[str, Any]) -> str:
    """A plain-text table, languages x metrics, with notes (e.g. METEOR's setup) underneath.

    Accepts a full report (with ``"languages"``) or a bare ``{lang: block}`` mapping.
    """
    header, rows = _rows(report)
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
        for r in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    for lang, block in _languages(report).items():
        for metric, note in (block.get("notes") or {}).items():
            if metric != "tokenizer" and not note.startswith("METEOR 1.5 official"):
                lines.append(f"note [{lang}] {metric}: {note}")
    lines += _check_lines(report)
    return "\n".join(lines)


def _check_lines(report: Mapping[str, Any]) -> list[str]:
    """One line per language for the object-mention and subject-named scores, where present."""
    lines = []
    for lang, block in _languages(report).items():
        if obj := block.get("objects"):
            scores = "  ".join(
                f"{name} {_fmt(name, obj.get(key))}"
                for name, key in (("CHAIRi", "CHAIRi"), ("CHAIRs", "CHAIRs"), ("recall", "recall"),
                                  ("largest-named", "largest_named"))
            )  # fmt: skip
            lines.append(f"objects [{lang}] ({obj['n_images']} images, truth: {obj['ground_truth']}): {scores}")
        if subj := block.get("subject_named"):
            lines.append(
                f"subject named [{lang}]: {_fmt('rate', subj['rate'])} ({subj['n_named']} of {subj['n_images']})"
            )
    return lines


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ").strip() or "*(empty)*"


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *["| " + " | ".join(r) + " |" for r in rows]]


def markdown_report(
    report: Mapping[str, Any],
    references: Mapping[str, Mapping[Hashable, Sequence[str]]],
    predictions: Mapping[str, Mapping[Hashable, str]],
    worst_best_k: int = 5,
) -> str:
    """Markdown: run details, the metrics table, then each language's worst and best captions.

    ``references`` and ``predictions`` are ``{lang: {image: ...}}`` as scored (references
    already cut to ``max_refs``); per-image CIDEr is recomputed on the images both cover.
    """
    out = ["# Caption evaluation", ""]
    for key in ("model", "data", "split"):
        if report.get(key) is not None:
            out.append(f"- **{key}**: {report[key]}")
    out += ["", *_md_table(*_rows(report)), ""]
    if checks := _check_lines(report):
        out += [*(f"- {_md_escape(line)}" for line in checks), ""]
    for lang in _languages(report):
        refs, preds = references.get(lang) or {}, predictions.get(lang) or {}
        keys = [k for k in preds if k in refs and refs[k]]
        if not keys:
            continue
        scored = score_report({k: refs[k] for k in keys}, {k: preds[k] for k in keys}, metrics=["CIDEr"], lang=lang)
        ranked = sorted(keys, key=lambda k: scored.per_image["CIDEr"][k])
        k = min(worst_best_k, len(ranked))
        for title, chosen in (("Worst", ranked[:k]), ("Best", ranked[::-1][:k])):
            out += [f"## {lang}: {title.lower()} {k} by CIDEr", ""]
            rows = [
                [
                    f"`{key}`",
                    f"{scored.per_image['CIDEr'][key]:.3f}",
                    _md_escape(preds[key]),
                    "<br>".join(_md_escape(r) for r in refs[key][:3]),
                ]
                for key in chosen
            ]
            out += [*_md_table(["image", "CIDEr", "prediction", "references (first 3)"], rows), ""]
    return "\n".join(out)
