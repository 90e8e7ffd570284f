"""ROUGE-L as pycocoevalcap computes it for captions (Lin & Hovy's LCS F-measure, beta = 1.2).

Per image, precision and recall are maximised *separately* over the references (the best
precision may come from a different reference than the best recall) and then combined; the
corpus score is the plain mean over images.  Tokens come from ``str.split(" ")`` as in
pycocoevalcap, so an empty caption is one empty token.  The LCS length is computed with the
bit-parallel algorithm (Allison & Dix 1986, Hyyrö 2004): same integer as the textbook dynamic
programme, one big-int operation per token instead of a table.
"""

from __future__ import annotations

from collections.abc import Sequence

from polycap.eval.metrics.numeric import numpy_mean

BETA = 1.2


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token sequences."""
    if len(a) < len(b):
        a, b = b, a
    masks: dict[str, int] = {}
    for i, tok in enumerate(b):
        masks[tok] = masks.get(tok, 0) | (1 << i)
    full = (1 << len(b)) - 1
    v = full
    for tok in a:
        u = v & masks.get(tok, 0)
        v = (v + u) | (v - u)
    return len(b) - (v & full).bit_count()


def rouge_l_image(candidate: str, refs: Sequence[str], beta: float = BETA) -> float:
    """pycocoevalcap ``Rouge.calc_score`` for one tokenised candidate and its references."""
    token_c = candidate.split(" ")
    prec = []
    rec = []
    for ref in refs:
        token_r = ref.split(" ")
        lcs = lcs_length(token_r, token_c)
        prec.append(lcs / float(len(token_c)))
        rec.append(lcs / float(len(token_r)))
    prec_max = max(prec)
    rec_max = max(rec)
    if prec_max != 0 and rec_max != 0:
        return ((1 + beta**2) * prec_max * rec_max) / float(rec_max + beta**2 * prec_max)
    return 0.0


def rouge_l(hyps: Sequence[str], refs: Sequence[Sequence[str]]) -> tuple[float, list[float]]:
    """Corpus ROUGE-L (mean over images) and the per-image scores."""
    scores = [rouge_l_image(h, rs) for h, rs in zip(hyps, refs, strict=True)]
    return numpy_mean(scores), scores
