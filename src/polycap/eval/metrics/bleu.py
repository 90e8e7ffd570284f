"""BLEU-1..4 exactly as pycocoevalcap's ``bleu_scorer.py`` computes it for COCO captions.

COCO-style BLEU differs from sacreBLEU/mteval in ways that change the numbers, so we copy them:
the brevity penalty uses the *closest* reference length per image (ties go to the shorter one),
counts are clipped by the maximum count over that image's references, everything is summed over
the corpus before the geometric mean, and the tiny/small epsilons (1e-15 / 1e-9) keep zero
counts finite.  Inputs are tokenised captions (space-joined strings); like pycocoevalcap we
split them with ``str.split()``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

_TINY = 1e-15
_SMALL = 1e-9


Counts = list[Counter[str]]  # one Counter per n-gram order, 1..n; an n-gram is "w1 w2 ... wn"


def ngram_counts(words: Sequence[str], n: int = 4) -> Counts:
    """Per-order n-gram counts of ``words``, as pycocoevalcap's ``precook`` counts them.

    An n-gram is its words joined by single spaces: words come from ``str.split()`` and hold no
    whitespace, so this is the same key as pycocoevalcap's tuple, and strings hash faster
    (their hash is cached).  Each Counter keeps first-occurrence order, the order
    pycocoevalcap's dicts iterate in -- CIDEr's float sums follow it.
    """
    out = [Counter(words)]
    grams = list(words)
    for k in range(1, n):
        grams = [g + " " + w for g, w in zip(grams, words[k:])]
        out.append(Counter(grams))
    return out


@dataclass
class BleuStats:
    """Sufficient statistics of one image: what the corpus score adds up."""

    testlen: int
    reflen: int  # the closest reference length
    guess: list[int]  # candidate n-grams per order
    correct: list[int]  # clipped matches per order


def image_stats(
    hyp_counts: Counts, hyp_len: int, ref_counts: Sequence[Counts], ref_lens: Sequence[int], n: int = 4
) -> BleuStats:
    """``cook_refs`` + ``cook_test`` with ``eff="closest"`` for one image.

    Clipping: each candidate n-gram counts at most as often as in the reference where it is
    most frequent; only n-grams shared with some reference need looking at.
    """
    correct = []
    for k in range(n):
        hk = hyp_counts[k]
        best: dict[str, int] = {}
        for rc in ref_counts:
            rk = rc[k]
            for g in hk.keys() & rk.keys():
                c = rk[g]
                if c > best.get(g, 0):
                    best[g] = c
        correct.append(sum([min(hk[g], c) for g, c in best.items()]))
    reflen = min((abs(rl - hyp_len), rl) for rl in ref_lens)[1]
    guess = [max(0, hyp_len - k + 1) for k in range(1, n + 1)]
    return BleuStats(hyp_len, reflen, guess, correct)


def _combine(testlen: float, reflen: float, guess: Sequence[int], correct: Sequence[int], n: int) -> list[float]:
    """BLEU-1..n from summed statistics, with pycocoevalcap's exact float operations."""
    bleus = []
    bleu = 1.0
    for k in range(n):
        bleu *= float(correct[k] + _TINY) / (guess[k] + _SMALL)
        bleus.append(bleu ** (1.0 / (k + 1)))
    ratio = (testlen + _TINY) / (reflen + _SMALL)
    if ratio < 1:
        for k in range(n):
            bleus[k] *= math.exp(1 - 1 / ratio)
    return bleus


def corpus_bleu(stats: Sequence[BleuStats], n: int = 4) -> list[float]:
    """Corpus BLEU-1..n (pycocoevalcap ``BleuScorer.compute_score(option="closest")``)."""
    testlen = sum(s.testlen for s in stats)
    reflen = sum(s.reflen for s in stats)
    guess = [sum(s.guess[k] for s in stats) for k in range(n)]
    correct = [sum(s.correct[k] for s in stats) for k in range(n)]
    return _combine(testlen, reflen, guess, correct, n)


def sentence_bleu(stat: BleuStats, n: int = 4) -> list[float]:
    """Per-image BLEU-1..n as pycocoevalcap reports it in its per-image list."""
    return _combine(stat.testlen, stat.reflen, stat.guess, stat.correct, n)


def bleu(hyps: Sequence[str], refs: Sequence[Sequence[str]], n: int = 4) -> list[float]:
    """Corpus BLEU-1..n of tokenised hypotheses against their tokenised references."""
    stats = []
    for hyp, rs in zip(hyps, refs, strict=True):
        hw = hyp.split()
        rws = [r.split() for r in rs]
        stats.append(
            image_stats(ngram_counts(hw, n), len(hw), [ngram_counts(w, n) for w in rws], [len(w) for w in rws], n)
        )
    return corpus_bleu(stats, n)
