"""chrF (chrF2: character 1..6-grams, beta = 2), corpus level, 0-100 -- sacreBLEU's numbers.

chrF needs no tokeniser and treats every script alike, which makes it the fairest single number
across polycap's languages.  This is sacreBLEU's ``CHRF()`` with its default settings
re-implemented for speed (sacreBLEU takes several seconds for 5,000 captions x 5 references;
the test suite checks both agree exactly): it reads the *raw* captions, deletes all whitespace,
is case-sensitive, and for several references scores each caption against the reference with
the best sentence-level chrF (first one on ties), summing that reference's statistics over the
corpus.  Images may have different numbers of references.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

CHAR_ORDER = 6
BETA = 2

_CharCounts = tuple[list[Counter[str]], int]  # per-order counts, length without whitespace


def _char_counts(text: str, order: int = CHAR_ORDER) -> _CharCounts:
    """sacreBLEU ``extract_all_char_ngrams`` (whitespace removed), plus the stripped length."""
    s = "".join(text.split())
    n_chars = len(s)
    counts = [Counter(s)]
    for n in range(2, order + 1):
        counts.append(Counter([s[i : i + n] for i in range(n_chars - n + 1)]))
    return counts, n_chars


def _pair_stats(hyp: _CharCounts, ref: _CharCounts) -> list[int]:
    """[hyp n-grams, ref n-grams, matches] per order, as sacreBLEU ``_get_match_statistics``."""
    (hcs, hlen), (rcs, rlen) = hyp, ref
    stats = []
    for i, (hc, rc) in enumerate(zip(hcs, rcs)):
        n = i + 1
        common = hc.keys() & rc.keys()
        match = sum(map(min, map(hc.__getitem__, common), map(rc.__getitem__, common)))
        n_ref = max(0, rlen - n + 1)
        stats += [max(0, hlen - n + 1) if n_ref else 0, n_ref, match]
    return stats


def f_score(stats: Sequence[int], beta: int = BETA) -> float:
    """sacreBLEU ``CHRF._compute_f_score`` (effective-order averaging, no eps smoothing)."""
    eps = 1e-16
    factor = beta**2
    avg_prec, avg_rec, effective_order = 0.0, 0.0, 0
    for i in range(len(stats) // 3):
        n_hyp, n_ref, n_match = stats[3 * i : 3 * i + 3]
        prec = n_match / n_hyp if n_hyp > 0 else eps
        rec = n_match / n_ref if n_ref > 0 else eps
        if n_hyp > 0 and n_ref > 0:
            avg_prec += prec
            avg_rec += rec
            effective_order += 1
    if effective_order == 0:
        avg_prec = avg_rec = 0.0
    else:
        avg_prec /= effective_order
        avg_rec /= effective_order
    if avg_prec + avg_rec:
        score = (1 + factor) * avg_prec * avg_rec
        score /= (factor * avg_prec) + avg_rec
        return 100 * score
    return 0.0


def chrf_image_stats(hyp: str, refs: Sequence[str]) -> list[int]:
    """The statistics of the best-matching reference for one caption."""
    h = _char_counts(hyp)
    best: list[int] = []
    best_f = -1.0
    for ref in refs:
        stats = _pair_stats(h, _char_counts(ref))
        f = f_score(stats)
        if f > best_f:
            best_f, best = f, stats
    return best


def chrf(hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> float:
    """Corpus chrF of raw hypotheses against raw references (``sacrebleu -m chrf``)."""
    total = [0] * (3 * CHAR_ORDER)
    for hyp, rs in zip(hyps, refs, strict=True):
        for i, v in enumerate(chrf_image_stats(hyp, rs)):
            total[i] += v
    return f_score(total)


def sacrebleu_chrf(hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> float:
    """The same score computed by sacreBLEU itself (slow; for cross-checks).

    Ragged reference lists are padded with ``None``, sacreBLEU's marker for a missing
    reference (an empty string would count as one).
    """
    from sacrebleu.metrics import CHRF

    width = max(len(rs) for rs in refs)
    streams = [[rs[i] if i < len(rs) else None for rs in refs] for i in range(width)]
    return float(CHRF().corpus_score(list(hyps), streams).score)
