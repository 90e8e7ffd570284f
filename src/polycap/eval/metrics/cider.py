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


class _Weights(dict):
    """n-gram -> idf weight; n-grams no reference has (document frequency 0) get ``log(#images)``."""

    def __init__(self, weights: dict[str, float], unseen: float):
        super().__init__(weights)
        self.unseen = unseen

    def __missing__(self, gram: str) -> float:
        return self.unseen


class CiderD:
    """CIDEr-D against fixed reference sets, document frequencies counted over those sets.

    :func:`cider_d` scores an evaluation set with it; self-critical training builds one over the
    training references and scores sampled captions against image ``i``'s references.
    """

    def __init__(
        self, refs: Sequence[Sequence[str]], sigma: float = SIGMA, counts_cache: dict[str, Counts] | None = None
    ):
        self.sigma = sigma
        self.cache = counts_cache if counts_cache is not None else {}
        self.ref_counts = [[self.counts(r) for r in rs] for rs in refs]
        df: Counter[str] = Counter()
        for rcs in self.ref_counts:  # document frequency: in how many images' references an n-gram occurs
            df.update(set().union(*(ck.keys() for rc in rcs for ck in rc)))
        n_images = len(self.ref_counts)
        # idf by document frequency d: log(#images) - log(max(1, d)); d = 0 for unseen n-grams
        logs = _log([float(n_images)] + [float(max(1, d)) for d in range(n_images + 1)])
        idf = [logs[0] - x for x in logs[1:]]
        self.weight = _Weights({g: idf[d] for g, d in df.items()}, idf[0])
        self.ref_norms = [[_norms(rc, self.weight) for rc in rcs] for rcs in self.ref_counts]

    def counts(self, sentence: str) -> Counts:
        c = self.cache.get(sentence)
        if c is None:
            c = self.cache[sentence] = ngram_counts(sentence.split(), N)
        return c

    def score_one(self, hyp: str, i: int) -> float:
        """CIDEr-D of a tokenised candidate against reference set ``i``."""
        hv = _vector(self.counts(hyp), self.weight)
        total = [0.0] * N
        for rc, norm in zip(self.ref_counts[i], self.ref_norms[i]):
            sim = _sim(hv, rc, norm, self.weight, self.sigma)
            for n in range(N):
                total[n] += sim[n]
        # np.mean over the 4 orders (a plain left-to-right sum below 8 items), / #refs, * 10
        avg = (((0.0 + total[0]) + total[1]) + total[2]) + total[3]
        return avg / N / len(self.ref_counts[i]) * 10.0


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
    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} candidates for {len(refs)} reference sets")
    scorer = CiderD(refs, sigma, counts_cache)
    scores = [scorer.score_one(h, i) for i, h in enumerate(hyps)]
    return numpy_mean(scores), scores
