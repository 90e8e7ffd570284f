"""CIDEr-D exactly as pycocoevalcap's ``Cider`` class computes it (despite its name).

Details that change the numbers, all kept: n = 1..4; TF-IDF weights with document frequencies
counted over the references of the images being evaluated (so scores depend on the evaluated
set, as in COCO); idf = log(#images) - log(max(1, df)); the candidate's weights are clipped by
the reference's (``min(hyp, ref) * ref``); a Gaussian penalty exp(-delta^2 / (2 * 6^2)) on the
length difference, where pycocoevalcap's "length" is the number of *bigrams*; the mean over
n-gram orders and references, times 10.  Float operations follow pycocoevalcap's order so the
result is bit-identical; the speed comes from computing every n-gram's idf once and each
sentence's weights once.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from functools import reduce
from itertools import repeat
from operator import add, mul

from polycap.eval.metrics.bleu import Counts, ngram_counts
from polycap.eval.metrics.numeric import numpy_mean

SIGMA = 6.0
N = 4

Vector = tuple[list[dict[str, float]], list[float], int]  # weights per order, norms, length


def _log(values: list[float]) -> list[float]:
    """Natural logs computed as pycocoevalcap does (``np.log``) when numpy is importable.

    numpy's log may differ from libm's in the last bit on some CPUs; there are only as many
    distinct values as distinct document frequencies, so this costs nothing.
    """
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a polycap dependency
        return [math.log(v) for v in values]
    return [float(x) for x in np.log(np.array(values, dtype=np.float64))]


def _norms(counts: Counts, weight: dict[str, float]) -> list[float]:
    """Per-order norms of a sentence's TF-IDF vector (pycocoevalcap ``counts2vec``).

    Summed left to right in first-occurrence order, like pycocoevalcap's loop; a term is
    ``pow(tf * idf, 2)`` exactly as there.
    """
    return [
        math.sqrt(reduce(add, map(pow, map(mul, ck.values(), map(weight.__getitem__, ck)), repeat(2)), 0.0))
        for ck in counts
    ]


def _vector(counts: Counts, weight: dict[str, float]) -> Vector:
    """The candidate's TF-IDF weights per order, their norms, and its "length" (#bigrams)."""
    vec = [{g: tf * weight[g] for g, tf in ck.items()} for ck in counts]
    return vec, _norms(counts, weight), sum(counts[1].values())


def _sim(hyp: Vector, ref: Counts, norm_r: list[float], weight: dict[str, float], sigma: float) -> list[float]:
    """pycocoevalcap ``sim``: clipped cosine per n-gram order times the length penalty.

    Only n-grams in both sentences add anything (the others add exactly 0.0); they are visited
    in the candidate's order, as pycocoevalcap visits them.
    """
    vec_h, norm_h, len_h = hyp
    delta = float(len_h - sum(ref[1].values()))
    penalty = math.e ** (-(delta**2) / (2 * sigma**2))
    val = []
    for n in range(N):
        vh, rk = vec_h[n], ref[n]
        terms = [min(vh[g], wr) * wr for g in vh if g in rk for wr in (rk[g] * weight[g],)]
        acc = reduce(add, terms, 0.0)
        if norm_h[n] != 0 and norm_r[n] != 0:
            acc /= norm_h[n] * norm_r[n]
        val.append(acc * penalty)
    return val


def cider_d(
    hyps: Sequence[str],
    refs: Sequence[Sequence[str]],
    sigma: float = SIGMA,
    counts_cache: dict[str, Counts] | None = None,
) -> tuple[float, list[float]]:
    """Corpus CIDEr-D (mean over images) and the per-image scores, for tokenised captions.

    ``counts_cache`` maps a tokenised sentence to its n-gram counts, to share the counting
    with BLEU (see :func:`polycap.eval.metrics.bleu.ngram_counts`).
    """
    cache = counts_cache if counts_cache is not None else {}

    def counts_of(sentence: str) -> Counts:
        c = cache.get(sentence)
        if c is None:
            c = cache[sentence] = ngram_counts(sentence.split(), N)
        return c

    hyp_counts = [counts_of(h) for h in hyps]
    ref_counts = [[counts_of(r) for r in rs] for rs in refs]
    df: Counter[str] = Counter()
    for rcs in ref_counts:  # document frequency: in how many images' references an n-gram occurs
        df.update(set().union(*(ck.keys() for rc in rcs for ck in rc)))
    n_images = len(ref_counts)
    # idf by document frequency d: log(#images) - log(max(1, d)); d = 0 for unseen n-grams
    logs = _log([float(n_images)] + [float(max(1, d)) for d in range(n_images + 1)])
    idf = [logs[0] - x for x in logs[1:]]
    weight = {g: idf[d] for g, d in df.items()}
    unseen = set().union(*(ck.keys() for hc in hyp_counts for ck in hc)) - weight.keys()
    weight.update(dict.fromkeys(unseen, idf[0]))
    scores = []
    for hc, rcs in zip(hyp_counts, ref_counts, strict=True):
        hv = _vector(hc, weight)
        total = [0.0] * N
        for rc in rcs:
            sim = _sim(hv, rc, _norms(rc, weight), weight, sigma)
            for n in range(N):
                total[n] += sim[n]
        # np.mean over the 4 orders (a plain left-to-right sum below 8 items), / #refs, * 10
        avg = (((0.0 + total[0]) + total[1]) + total[2]) + total[3]
        scores.append(avg / N / len(rcs) * 10.0)
    return numpy_mean(scores), scores
