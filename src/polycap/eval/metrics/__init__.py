"""Caption-quality metrics equal to the COCO reference implementation (pycocoevalcap).

:func:`score` takes raw captions -- references and predictions keyed by image id -- and returns
``{"BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "chrF"}``.  For English
the numbers are those of pycocoevalcap's ``COCOEvalCap`` on the same captions (PTB tokenisation,
then Bleu(4), Meteor(), Rouge(), Cider()), without running Java except for METEOR.  chrF is
sacreBLEU's (default chrF2, re-implemented for speed).  Other languages use a Unicode tokeniser
(see :mod:`.tokenize`).

Conventions:

* Only the images in ``predictions`` are scored; each needs at least one reference (an id with
  none raises ValueError).  References of other images are ignored -- but note that CIDEr's
  document frequencies, like COCO's, come from the references of the scored images.
* Images are processed in the order of ``predictions`` (it fixes float summation order, so
  results are reproducible bit for bit).
* ``max_refs=N`` uses only the first N references of each image.
* An empty prediction is allowed and scores as pycocoevalcap scores it (zero for the n-gram
  metrics).
* METEOR is ``None`` where it cannot run (no Java, no jar); :func:`score_report` says why in
  ``notes``, which also records how METEOR was run for the language.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field

from polycap.eval.metrics.bleu import Counts, corpus_bleu, image_stats, ngram_counts, sentence_bleu
from polycap.eval.metrics.chrf import chrf
from polycap.eval.metrics.cider import cider_d
from polycap.eval.metrics.meteor import meteor
from polycap.eval.metrics.rouge import rouge_l
from polycap.eval.metrics.tokenize import is_english, tokenize, tokenize_batch

__all__ = ["METRICS", "ScoreReport", "score", "score_report", "tokenize", "tokenize_batch"]

METRICS = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr", "chrF")
_ALIASES = {"BLEU": METRICS[:4], "ROUGE": ("ROUGE-L",), "CIDER": ("CIDEr",), "CIDER-D": ("CIDEr",), "CHRF": ("chrF",)}


@dataclass
class ScoreReport:
    """Corpus scores plus what explains them.

    ``per_image`` maps a metric name to ``{image id: score}`` for the metrics that have
    per-image values (BLEU-1..4, METEOR, ROUGE-L, CIDEr); ``notes`` maps a metric name to why it
    is None or how it was computed (the METEOR configuration, the tokeniser).
    """

    scores: dict[str, float | None]
    per_image: dict[str, dict[Hashable, float]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)


def _wanted(metrics: Sequence[str] | None) -> list[str]:
    if metrics is None:
        return list(METRICS)
    if isinstance(metrics, str):
        metrics = [metrics]
    out: list[str] = []
    by_upper = {m.upper(): m for m in METRICS}
    for m in metrics:
        names = _ALIASES.get(m.upper()) or ((by_upper[m.upper()],) if m.upper() in by_upper else None)
        if names is None:
            raise ValueError(f"unknown metric {m!r}; known: {', '.join(METRICS)}")
        out.extend(n for n in names if n not in out)
    return [m for m in METRICS if m in out]


def _select(
    references: Mapping[Hashable, Sequence[str]], predictions: Mapping[Hashable, str], max_refs: int | None
) -> tuple[list[Hashable], list[str], list[list[str]]]:
    """Validate inputs; return ids, raw predictions and raw (trimmed) references, aligned."""
    if max_refs is not None and (not isinstance(max_refs, int) or max_refs < 1):
        raise ValueError(f"max_refs must be a positive integer or None, got {max_refs!r}")
    if not predictions:
        raise ValueError("no predictions to score")
    missing = [k for k in predictions if k not in references]
    if missing:
        shown = ", ".join(repr(k) for k in missing[:5])
        more = f" (and {len(missing) - 5} more)" if len(missing) > 5 else ""
        raise ValueError(f"{len(missing)} predicted image id(s) have no references: {shown}{more}")
    ids = list(predictions)
    hyps, refs = [], []
    for k in ids:
        hyp = predictions[k]
        rs = references[k]
        if not isinstance(hyp, str):
            raise ValueError(f"prediction for {k!r} is {type(hyp).__name__}, expected str")
        if isinstance(rs, str) or not all(isinstance(r, str) for r in rs):
            raise ValueError(f"references for {k!r} must be a list of strings")
        rs = list(rs)[:max_refs]
        if not rs:
            raise ValueError(f"image {k!r} has no references")
        hyps.append(hyp)
        refs.append(rs)
    return ids, hyps, refs


def _bleu_and_cider(
    wanted: list[str], ids: list[Hashable], hyps: list[str], refs: list[list[str]], report: ScoreReport
) -> None:
    """BLEU-1..4 and CIDEr share the n-gram counting of every tokenised sentence."""
    cache: dict[str, Counts] = {}

    def counts(sentence: str) -> Counts:
        c = cache.get(sentence)
        if c is None:
            c = cache[sentence] = ngram_counts(sentence.split(), 4)
        return c

    if any(m.startswith("BLEU") for m in wanted):
        stats = [
            image_stats(counts(h), len(h.split()), [counts(r) for r in rs], [len(r.split()) for r in rs])
            for h, rs in zip(hyps, refs)
        ]
        per_image = [sentence_bleu(s) for s in stats]
        for k, value in enumerate(corpus_bleu(stats)):
            name = f"BLEU-{k + 1}"
            if name in wanted:
                report.scores[name] = value
                report.per_image[name] = {i: p[k] for i, p in zip(ids, per_image)}
    if "CIDEr" in wanted:
        value, per_image = cider_d(hyps, refs, counts_cache=cache)
        report.scores["CIDEr"] = value
        report.per_image["CIDEr"] = dict(zip(ids, per_image))


def score_report(
    references: Mapping[Hashable, Sequence[str]],
    predictions: Mapping[Hashable, str],
    metrics: Sequence[str] | None = None,
    lang: str = "en",
    max_refs: int | None = None,
) -> ScoreReport:
    """Like :func:`score`, with per-image scores and notes (see :class:`ScoreReport`)."""
    wanted = _wanted(metrics)
    ids, raw_hyps, raw_refs = _select(references, predictions, max_refs)
    report = ScoreReport(scores={})
    if any(m != "chrF" for m in wanted):
        # Two tokenizer calls, references then predictions, as COCOEvalCap makes them.
        flat = tokenize_batch([r for rs in raw_refs for r in rs], lang)
        refs, pos = [], 0
        for rs in raw_refs:
            refs.append(flat[pos : pos + len(rs)])
            pos += len(rs)
        hyps = tokenize_batch(raw_hyps, lang)
        report.notes["tokenizer"] = (
            "PTB, as pycocoevalcap" if is_english(lang) else "Unicode (NFKC, casefold, punctuation removed)"
        )
        _bleu_and_cider(wanted, ids, hyps, refs, report)
        if "ROUGE-L" in wanted:
            value, per_image = rouge_l(hyps, refs)
            report.scores["ROUGE-L"] = value
            report.per_image["ROUGE-L"] = dict(zip(ids, per_image))
        if "METEOR" in wanted:
            try:
                value, per_image, note = meteor(hyps, refs, lang)
            except (RuntimeError, OSError) as e:
                report.scores["METEOR"] = None
                report.notes["METEOR"] = f"unavailable: {e}"
            else:
                report.scores["METEOR"] = value
                report.per_image["METEOR"] = dict(zip(ids, per_image))
                report.notes["METEOR"] = note
    if "chrF" in wanted:
        report.scores["chrF"] = chrf(raw_hyps, raw_refs)
    report.scores = {m: report.scores[m] for m in METRICS if m in report.scores}
    return report


def score(
    references: Mapping[Hashable, Sequence[str]],
    predictions: Mapping[Hashable, str],
    metrics: Sequence[str] | None = None,
    lang: str = "en",
    max_refs: int | None = None,
) -> dict[str, float | None]:
    """Score raw predicted captions against raw references; see the module docstring.

    ``metrics`` selects a subset of :data:`METRICS` (also accepted: "BLEU" for BLEU-1..4,
    case-insensitive names).  Returns ``{metric: value}`` in :data:`METRICS` order; BLEU,
    METEOR, ROUGE-L and CIDEr on pycocoevalcap's scales (CIDEr is x10, so ~0-10), chrF 0-100.
    """
    return score_report(references, predictions, metrics, lang, max_refs).scores
