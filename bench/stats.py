"""The statistics behind every verdict: intervals of a median, and (in bench/compare.py) the tests
that compare two runs' raw samples.

:func:`median_ci` is the distribution-free interval of a median from order statistics (the binomial
rule): no assumption about how timings are spread, which on a busy machine they are not (skewed,
with a long right tail).
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats as sps

LEVEL = 0.95


def median_ci(samples, level: float = LEVEL) -> tuple[float, float]:
    """(low, high): the ``level`` interval of the median of ``samples`` from their order statistics.

    With n sorted samples (from 0) the interval [x_j, x_(n-1-j)] covers the median with probability
    1 - 2 P(Binomial(n, 1/2) <= j); j is the largest index keeping that >= ``level``. Below 6 samples no
    pair reaches 95%: the interval is then (min, max), which covers less (n=5: 94%).
    """
    x = np.sort(np.asarray(samples, dtype=float))
    n = len(x)
    if n == 0:
        return math.nan, math.nan
    j = 0  # counting from 0, [x_j, x_(n-1-j)] covers the median with probability 1 - 2 P(B <= j)
    while j + 1 < n - 2 - j and 1 - 2 * sps.binom.cdf(j + 1, n, 0.5) >= level:
        j += 1
    return float(x[j]), float(x[n - 1 - j])


def relative_halfwidth(samples, level: float = LEVEL) -> float:
    """Half the width of :func:`median_ci` over the median (0.03: the median is known to +-3%)."""
    lo, hi = median_ci(samples, level)
    med = float(np.median(samples)) if len(samples) else math.nan
    return (hi - lo) / 2 / med if med > 0 else math.inf
