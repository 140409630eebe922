"""The statistics behind every verdict: the interval of a median, the ratio of two times with its interval, and
the one rule that turns a run's ratios into verdicts (slower, faster, same, inconclusive) with the errors of
the whole run controlled together.

:func:`median_ci` is the distribution-free interval of a median from order statistics (the binomial rule).
A comparison is an :class:`Estimate` of log(B/A), on the log scale since a slowdown is a factor: from paired
rounds (:func:`paired`: ``linbench ab``, each round's B/A of slots measured side by side, A B B A) or from two
independent samples (:func:`unpaired`: ``linbench compare`` of two finished runs). :func:`decide` judges
every comparison of a run at once (:mod:`bench.regress.verdicts` and ``ab`` call it, the report shows it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

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
    j = _order_index(n, level)
    return float(x[j]), float(x[n - 1 - j])


@lru_cache(maxsize=1024)
def _order_index(n: int, level: float) -> int:
    """The largest j (from 0) whose [x_j, x_(n-1-j)] covers the median of n samples with probability
    1 - 2 P(Binomial(n, 1/2) <= j) >= ``level`` (0 where none does); once per n (the timer asks at every block)."""
    k = np.arange(1, n)
    ok = (k < n - 1 - k) & (1 - 2 * _half_binomial_cdf(n)[1:] >= level)
    return int(ok.sum())  # both conditions hold for every k up to j and for none after it


def _half_binomial_cdf(n: int) -> np.ndarray:
    """P(Binomial(n, 1/2) <= k) for k = 0 .. n-1, from exact integer sums (each float correctly rounded): scipy's
    import would cost every timing process a second, and this is all the timer needs of it."""
    sums, total = [], 0
    for k in range(n):
        total += math.comb(n, k)
        sums.append(total / 2**n)
    return np.array(sums)


def relative_halfwidth(samples, level: float = LEVEL) -> float:
    """Half the width of :func:`median_ci` over the median (0.03: the median is known to +-3%)."""
    lo, hi = median_ci(samples, level)
    med = float(np.median(samples)) if len(samples) else math.nan
    return (hi - lo) / 2 / med if med > 0 else math.inf


def _floats(samples) -> np.ndarray:
    x = np.asarray(samples, dtype=float).ravel()
    return x[np.isfinite(x)]


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


def _t():
    return _scipy_stats().t


@dataclass(frozen=True)
class Estimate:
    """log(B/A) of times (> 0: B is slower), its standard error and degrees of freedom (Student's t), and the
    counts it came from: rounds for a paired estimate, samples a side for an unpaired one."""
    log_ratio: float
    se: float
    df: float
    n_a: int
    n_b: int
    paired: bool = False

    @property
    def ratio(self) -> float:
        return math.exp(self.log_ratio)

    def _z(self, edge: float) -> float:
        if self.se > 0:
            return (self.log_ratio - edge) / self.se
        return math.copysign(math.inf, self.log_ratio - edge) if self.log_ratio != edge else 0.0

    def interval(self, alpha: float) -> tuple[float, float]:
        """The two-sided ``1 - alpha`` interval of the ratio B/A."""
        q = float(_t().ppf(1 - alpha / 2, self.df)) * self.se
        return math.exp(self.log_ratio - q), math.exp(self.log_ratio + q)

    def p_values(self, min_effect: float) -> tuple[float, float]:
        """(p_diff, p_same). p_diff < a exactly when the ``1 - a`` interval lies outside the band
        [1 - min_effect, 1 + min_effect] (a change of more than min_effect, either way); p_same < a exactly when
        it lies inside (two one-sided tests, each at a/2): each verdict is its interval read against the band."""
        t, up, down = _t(), math.log1p(min_effect), math.log1p(-min_effect)
        p_slower, p_faster = float(t.sf(self._z(up), self.df)), float(t.cdf(self._z(down), self.df))
        above, below = float(t.sf(self._z(down), self.df)), float(t.cdf(self._z(up), self.df))
        return min(1.0, 2 * min(p_slower, p_faster)), min(1.0, 2 * max(above, below))

    def rounds_to_decide(self, min_effect: float, alpha: float, most: int = 10_000) -> int | None:
        """About how many rounds in all would decide this paired estimate at level ``alpha``, if the ratio and
        the spread stay as they are (None: more than ``most``; the ratio sits on the band's edge)."""
        up, down, x = math.log1p(min_effect), math.log1p(-min_effect), self.log_ratio
        dist = x - up if x > up else down - x if x < down else min(up - x, x - down)
        spread = self.se * math.sqrt(self.n_a)
        if spread == 0:
            return self.n_a
        if dist <= 0:
            return None
        n = max(2, math.ceil((1.96 * spread / dist) ** 2))
        while n <= most and float(_t().ppf(1 - alpha / 2, n - 1)) * spread / math.sqrt(n) >= dist:
            n = math.ceil(n * 1.1) + 1
        return n if n <= most else None


def _logs(x) -> np.ndarray:
    x = _floats(x)
    return np.log(x[x > 0])


TRIM = 0.1  # the share cut from each tail of the per-round ratios (Yuen's trimmed mean): one burst of load in a
# round moves that round alone, and a trimmed mean does not follow it, while with no burst it loses little


def _trimmed(x: np.ndarray, trim: float = TRIM) -> tuple[float, float, int]:
    """(trimmed mean, the squared standard error's numerator term d, h = values kept) of ``x`` (Yuen 1974):
    d = (n - 1) s_w^2 / (h (h - 1)) with s_w^2 the winsorized variance."""
    x, n = np.sort(x), len(x)
    g = int(trim * n)
    h = n - 2 * g
    w = np.clip(x, x[g], x[n - 1 - g])
    return float(x[g:n - g].mean()), float((n - 1) * w.var(ddof=1) / (h * (h - 1))), h


def round_log_ratio(a, b) -> float:
    """One round's log-ratio from the samples of both sides, taken in turns (A B B A ...): ``a[k]`` and ``b[k]``
    were measured next to each other. Each two neighbouring pairs (one A-first, one B-first) give the mean of
    their log-ratios, so the order within a pair and a steady drift cancel; the round's value is the median of
    those means, so a burst of load in one block moves it little. NaN without samples on both sides."""
    a, b = _floats(a), _floats(b)
    n = min(len(a), len(b))
    d = np.log(b[:n]) - np.log(a[:n]) if n else np.array([])
    d = d[np.isfinite(d)]
    if not len(d):
        return math.nan
    means = [d[i:i + 2].mean() for i in range(0, len(d), 2)]
    return float(np.median(means))


def paired(a_rounds, b_rounds) -> Estimate | None:
    """From rounds measured side by side: ``a_rounds[i]`` and ``b_rounds[i]`` each side's samples in round i,
    taken in turns (:func:`round_log_ratio`). Each round gives one log-ratio, so whatever the machine did
    during the round cancels; rounds are independent (fresh processes), samples of one round are not. Their
    10%-trimmed mean and Yuen's t (df = kept - 1). None below 3 rounds."""
    d = np.array([round_log_ratio(a, b) for a, b in zip(a_rounds, b_rounds)])
    d = d[np.isfinite(d)]
    if len(d) < 3:
        return None
    mean, term, h = _trimmed(d)
    return Estimate(mean, math.sqrt(term), h - 1, len(d), len(d), True)


def unpaired(a, b) -> Estimate | None:
    """From two independent samples of times: the difference of their logs' trimmed means, Yuen's t (Welch's
    df on the trimmed samples). None when a side has under 3."""
    la, lb = _logs(a), _logs(b)
    if len(la) < 3 or len(lb) < 3:
        return None
    (ma, da, ha), (mb, db, hb) = _trimmed(la), _trimmed(lb)
    se = math.sqrt(da + db)
    df = (da + db) ** 2 / (da**2 / (ha - 1) + db**2 / (hb - 1)) if se > 0 else ha + hb - 2
    return Estimate(mb - ma, se, df, len(la), len(lb))


def holm(p_values, alpha: float) -> tuple[list[bool], list[float]]:
    """Holm's step-down over a family: which hypotheses are rejected, and the level each was tested at (the
    family-wise error rate stays <= alpha, whatever the dependence between the tests)."""
    m, order = len(p_values), np.argsort(p_values, kind="stable")
    rejected, levels, going = [False] * m, [alpha / m if m else alpha] * m, True
    for k, i in enumerate(order):
        levels[i] = alpha / (m - k)
        going = going and p_values[i] < levels[i]
        rejected[i] = going
    return rejected, levels


def settled(est: Estimate | None, min_effect: float, alpha: float) -> bool:
    """Whether ``est`` is decided at level ``alpha``: its interval wholly outside or wholly inside the band."""
    return est is not None and min(est.p_values(min_effect)) < alpha


def decide(estimates: list, min_effect: float = MIN_EFFECT, alpha: float = ALPHA) -> list[dict]:
    """The verdict of every comparison of one run, their errors controlled together.

    Per comparison: ``slower``/``faster`` when the ratio's interval lies wholly beyond 1 +- min_effect,
    ``same`` when it lies wholly within, ``inconclusive`` otherwise (or with no estimate). The family-wise
    error rate of the run is held at ``alpha`` by Holm's step-down, separately for the claims of a change
    (p_diff) and of none (p_same): among m comparisons the surest is tested at alpha/m, the next at
    alpha/(m-1), and so on. Holm rather than Benjamini-Hochberg: a regression gate acts on every single
    `slower`, so the chance of any false one in a run is what must be small, not their expected share.
    ``ratio_lo``/``ratio_hi`` are the interval at the level the verdict was reached at (``level``);
    an inconclusive one's at alpha/m, the level every comparison is sure to be held to.
    """
    idx = [i for i, e in enumerate(estimates) if e is not None]
    pairs = [estimates[i].p_values(min_effect) for i in idx]
    diff, diff_at = holm([p for p, _ in pairs], alpha)
    same, same_at = holm([p for _, p in pairs], alpha)
    m, out = len(idx), [None] * len(estimates)
    for j, i in enumerate(idx):
        e = estimates[i]
        verdict = ("slower" if e.log_ratio > 0 else "faster") if diff[j] else "same" if same[j] else "inconclusive"
        a = diff_at[j] if diff[j] else same_at[j] if same[j] else alpha / m
        lo, hi = e.interval(a)
        what = f"B/A {e.ratio:.3g} [{lo:.3g}, {hi:.3g}] at {100 * (1 - a):.3f}".rstrip("0").rstrip(".") + "%"
        holm_of = f"(Holm over {m} comparison(s), {'rounds' if e.paired else 'samples'} {e.n_a} vs {e.n_b})"
        if verdict in ("slower", "faster"):
            why = f"{what} lies beyond {1 + min_effect if verdict == 'slower' else 1 - min_effect:g} {holm_of}"
        elif verdict == "same":
            why = f"{what} lies within +-{min_effect:.0%} {holm_of}"
        else:
            why = f"{what} reaches across 1 +- {min_effect:.0%} {holm_of}"
            if e.paired:
                need = e.rounds_to_decide(min_effect, a)
                why += (f"; about {need - e.n_a} more round(s) would likely decide it" if need and need > e.n_a
                        else "; the ratio sits at the band's edge: no number of rounds is likely to decide it"
                        if need is None else "")
        out[i] = dict(ratio=e.ratio, ratio_lo=lo, ratio_hi=hi, level=1 - a, p_diff=pairs[j][0],
                      p_same=pairs[j][1], verdict=verdict, reason=why)
    for i, e in enumerate(estimates):
        if e is None:
            out[i] = dict(ratio=math.nan, ratio_lo=math.nan, ratio_hi=math.nan, level=math.nan, p_diff=math.nan,
                          p_same=math.nan, verdict="inconclusive", reason="too few samples or rounds (3 a side at "
                          "least) to estimate the ratio's spread")
    return out


def meanings(min_effect: float = MIN_EFFECT, alpha: float = ALPHA) -> dict[str, str]:
    """Each verdict of :func:`decide` in one sentence, for the terminal and the report."""
    return {
        "slower": f"the interval of B/A lies wholly above {1 + min_effect:g}: B takes more than {min_effect:.0%} "
                  f"more time (the run's chance of any false `slower` or `faster` <= {alpha:g}, Holm).",
        "faster": f"the interval of B/A lies wholly below {1 - min_effect:g}: B takes more than {min_effect:.0%} "
                  "less time.",
        "same": f"the interval of B/A lies wholly within +-{min_effect:.0%}: any change is smaller than what counts.",
        "inconclusive": "the interval reaches across the band's edge: neither shown; `linbench ab` adds rounds "
                        "until decided or its budget ends, and says how many more would likely decide it.",
    }
