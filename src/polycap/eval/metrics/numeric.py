"""numpy's float64 mean in pure Python, so averages match pycocoevalcap to the last bit.

pycocoevalcap averages per-image ROUGE-L and CIDEr scores with ``np.mean``, which sums with
numpy's pairwise summation, not left to right.  The results differ in the last bits; matching
them exactly keeps "equal to the reference implementation" testable with ``==`` and spares the
metrics a numpy dependency.
"""

from __future__ import annotations

from collections.abc import Sequence

_BLOCK = 128  # numpy's PW_BLOCKSIZE


def _pairwise_sum(a: Sequence[float], lo: int, n: int) -> float:
    """numpy's ``pairwise_sum_DOUBLE`` over ``a[lo:lo + n]`` (8-way unrolled blocks)."""
    if n < 8:
        res = 0.0
        for i in range(lo, lo + n):
            res += a[i]
        return res
    if n <= _BLOCK:
        r = [a[lo + j] for j in range(8)]
        i = 8
        while i < n - (n % 8):
            for j in range(8):
                r[j] += a[lo + i + j]
            i += 8
        res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]))
        while i < n:
            res += a[lo + i]
            i += 1
        return res
    n2 = n // 2
    n2 -= n2 % 8
    return _pairwise_sum(a, lo, n2) + _pairwise_sum(a, lo + n2, n - n2)


def numpy_mean(values: Sequence[float]) -> float:
    """``float(np.mean(np.array(values)))`` without numpy; nan for an empty sequence."""
    n = len(values)
    if n == 0:
        return float("nan")
    return _pairwise_sum(values, 0, n) / n
