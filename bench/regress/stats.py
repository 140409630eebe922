"""The statistics behind every verdict: intervals of a median, the test and the interval that compare
two samples of times, and the verdict rule (slower, faster, same, inconclusive) built from them.

:func:`median_ci` is the distribution-free interval of a median from order statistics (the binomial
rule): no assumption about how timings are spread, which on a busy machine they are not (skewed,
with a long right tail). Two samples are compared the same way: by Mann-Whitney's rank test
(:func:`mann_whitney`) and by the ratio of their medians with a bootstrap interval (:func:`ratio_ci`).
:func:`verdict` is the one rule every comparison (``linbench compare``, the report) applies.
"""
from __future__ import annotations

import math

import numpy as np

LEVEL = 0.95
MIN_EFFECT, ALPHA = 0.05, 0.05
VERDICTS = ("slower", "faster", "same", "inconclusive")


def _scipy_stats():
    """scipy.stats, imported on first use: the timing code imports this module, and scipy's import is
    seconds under valgrind (``linbench counts``)."""
    from scipy import stats

    return stats


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
    while j + 1 < n - 2 - j and 1 - 2 * _scipy_stats().binom.cdf(j + 1, n, 0.5) >= level:
        j += 1
    return float(x[j]), float(x[n - 1 - j])


def relative_halfwidth(samples, level: float = LEVEL) -> float:
    """Half the width of :func:`median_ci` over the median (0.03: the median is known to +-3%)."""
    lo, hi = median_ci(samples, level)
    med = float(np.median(samples)) if len(samples) else math.nan
    return (hi - lo) / 2 / med if med > 0 else math.inf


def _floats(samples) -> np.ndarray:
    x = np.asarray(samples, dtype=float).ravel()
    return x[np.isfinite(x)]


def mann_whitney(a, b) -> float:
    """Two-sided p-value of Mann-Whitney's U test that ``a`` and ``b`` come from one distribution
    (exact for small samples without ties, else the normal approximation); NaN when a side is empty."""
    a, b = _floats(a), _floats(b)
    if not len(a) or not len(b):
        return math.nan
    if np.ptp(np.concatenate([a, b])) == 0:
        return 1.0  # every value equal: nothing tells the two apart
    return float(_scipy_stats().mannwhitneyu(a, b, alternative="two-sided").pvalue)


def smallest_p(n_a: int, n_b: int) -> float:
    """The smallest two-sided p Mann-Whitney's exact test can give ``n_a`` against ``n_b`` samples
    (every b above every a): 2 / C(n_a + n_b, n_a). 3 vs 3: 0.1, so p < 0.05 is out of reach."""
    return min(1.0, 2 / math.comb(n_a + n_b, n_a)) if n_a and n_b else 1.0


def _boot_medians(x: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """The medians of ``n_boot`` resamples (with replacement) of ``x``, drawn in blocks of bounded memory."""
    block = max(1, 2_000_000 // len(x))
    return np.concatenate([np.median(x[rng.integers(0, len(x), (min(block, n_boot - i), len(x)))], axis=1)
                           for i in range(0, n_boot, block)])


def ratio_ci(a, b, level: float = LEVEL, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """(low, high): the percentile bootstrap interval of median(b) / median(a), resampling both
    samples independently ``n_boot`` times (seeded: the same samples give the same interval)."""
    a, b = _floats(a), _floats(b)
    if not len(a) or not len(b):
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = _boot_medians(b, n_boot, rng) / _boot_medians(a, n_boot, rng)
    lo, hi = np.quantile(ratios, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def speedup_ci(base_samples, cell_samples, level: float = LEVEL, n_boot: int = 2000,
               seed: int = 0) -> tuple[float, float]:
    """(low, high): the bootstrap interval (:func:`ratio_ci`) of a throughput speedup, median(base time)
    / median(cell time) (2: the cell does the work in half the base's time)."""
    return ratio_ci(cell_samples, base_samples, level, n_boot, seed)


def verdict(a, b, min_effect: float = MIN_EFFECT, alpha: float = ALPHA) -> dict:
    """Whether B's times are slower, faster, the same as A's, or inconclusive; with the numbers and why.

    ratio = median(b) / median(a) of times (> 1: B is slower); [ratio_lo, ratio_hi] its ``1 - alpha``
    bootstrap interval (:func:`ratio_ci`); p_value Mann-Whitney's two-sided p (:func:`mann_whitney`).
    The rule, first match wins:

    1. inconclusive when a side has no samples, or too few for the test ever to reach p < alpha
       (:func:`smallest_p` >= alpha: 3 vs 3 samples can never be told apart at 5%; 4 vs 4 can);
    2. slower when p < alpha and ratio >= 1 + min_effect: the samples differ (the test) and by enough
       to matter (the point estimate); faster when p < alpha and ratio <= 1 - min_effect;
    3. same when the whole interval lies within [1 - min_effect, 1 + min_effect]: any change is
       shown to be smaller than min_effect (an equivalence test), whatever p says;
    4. inconclusive otherwise: no difference was shown, and none was ruled out (the interval is wider
       than +-min_effect), or a difference was shown that is smaller than min_effect.

    Why the point estimate in 2 and not the interval (``asv compare`` decides the same way: a factor on
    the point estimates, and a Mann-Whitney test): the rank test alone holds the false positives of
    identical distributions to alpha, and min_effect on top keeps most tiny real shifts (a busier
    machine) from being called out. Measured over 2000 comparisons of 20 vs 20 lognormal samples
    (sigma 0.2, a busy machine): identical runs are called slower 2.3% of the time (faster 2.2%), a
    1.3x slowdown is caught 97% of the time. Asking the interval to clear 1 + min_effect as well
    would cut the first to 0.4% but the second to 77%; tests/test_stats.py asserts both rates.
    """
    a, b = _floats(a), _floats(b)
    n_a, n_b = len(a), len(b)
    med_a = float(np.median(a)) if n_a else math.nan
    med_b = float(np.median(b)) if n_b else math.nan
    ratio = med_b / med_a if n_a and n_b and med_a > 0 else math.nan
    lo, hi = ratio_ci(a, b, level=1 - alpha)
    p = mann_whitney(a, b)
    out = dict(n_a=n_a, n_b=n_b, median_a=med_a, median_b=med_b, ratio=ratio, ratio_lo=lo, ratio_hi=hi,
               p_value=p)
    interval = f"the {1 - alpha:.0%} interval of the ratio [{lo:.3g}, {hi:.3g}]"
    if not n_a or not n_b:
        return {**out, "verdict": "inconclusive", "reason": f"no samples in {'A' if not n_a else 'B'}"}
    if (least := smallest_p(n_a, n_b)) >= alpha:
        return {**out, "verdict": "inconclusive", "reason": f"too few samples: {n_a} vs {n_b} can never reach "
                f"p < {alpha:g} (the smallest p is {least:.2g}); time more repeats"}
    change = f"B's median {abs(ratio - 1):.0%} {'higher' if ratio >= 1 else 'lower'} (p={p:.2g})"
    if p < alpha and ratio >= 1 + min_effect:
        return {**out, "verdict": "slower", "reason": change}
    if p < alpha and ratio <= 1 - min_effect:
        return {**out, "verdict": "faster", "reason": change}
    if 1 - min_effect <= lo and hi <= 1 + min_effect:
        return {**out, "verdict": "same", "reason": f"{interval} lies within +-{min_effect:.0%}"}
    if p < alpha:
        why = f"{change}: a change below the {min_effect:.0%} that counts, but {interval} reaches beyond it"
    else:
        why = f"no difference shown (p={p:.2g}), none ruled out: {interval} is wider than +-{min_effect:.0%}"
    return {**out, "verdict": "inconclusive", "reason": why}


def meanings(min_effect: float = MIN_EFFECT, alpha: float = ALPHA) -> dict[str, str]:
    """Each verdict of :func:`verdict` in one sentence, for the terminal and the report."""
    return {
        "slower": f"B takes at least {min_effect:.0%} more time than A (median ratio >= {1 + min_effect:g}) and "
                  f"the rank test tells the two apart (p < {alpha:g}).",
        "faster": f"B takes at least {min_effect:.0%} less time than A (median ratio <= {1 - min_effect:g}) and "
                  f"the rank test tells the two apart (p < {alpha:g}).",
        "same": f"the {1 - alpha:.0%} interval of the median ratio lies within +-{min_effect:.0%}: any change is "
                "smaller than what counts.",
        "inconclusive": "too few samples, or too much noise, to say either: time more repeats on a quieter "
                        "machine (the reason column says which).",
    }
