"""The statistics of verdicts (bench/stats.py) on synthetic samples with fixed seeds: the median's
interval covers, identical runs are rarely called different, a 1.3x slowdown is caught, too few
samples say so. Busy-machine noise is lognormal (right-skewed) with sigma 0.2, times of one cell
spread +-20%; the rates measured are printed (pytest -s) and asserted."""
import math

import numpy as np
import pytest

from bench.regress.stats import (
    mann_whitney,
    meanings,
    median_ci,
    ratio_ci,
    relative_halfwidth,
    smallest_p,
    speedup_ci,
    verdict,
)

TRIALS, N, SIGMA = 200, 20, 0.2


def busy(rng, n, scale=1.0):
    """``n`` times of one cell on a busy machine: lognormal, right-skewed."""
    return scale * rng.lognormal(0.0, SIGMA, n)


def rates(effect: float, n: int = N, seed: int = 0) -> dict[str, float]:
    """The share of each verdict over ``TRIALS`` comparisons of A against B = ``effect`` x A's times."""
    rng = np.random.default_rng(seed)
    verdicts = [verdict(busy(rng, n), busy(rng, n, effect))["verdict"] for _ in range(TRIALS)]
    return {v: verdicts.count(v) / TRIALS for v in ("slower", "faster", "same", "inconclusive")}


def test_median_ci_covers_the_true_median_about_as_often_as_it_says():
    rng = np.random.default_rng(1)
    true = math.exp(0.0)  # the median of lognormal(0, sigma)
    for n in (10, 30):
        covered = np.mean([lo <= true <= hi for lo, hi in (median_ci(busy(rng, n)) for _ in range(400))])
        assert 0.93 <= covered <= 1.0, (n, covered)  # order statistics: at least 95% up to sampling noise
    assert median_ci([]) == (math.nan, math.nan) or all(math.isnan(v) for v in median_ci([]))
    assert median_ci([3.0, 1.0, 2.0]) == (1.0, 3.0)  # under 6 samples: (min, max)
    assert relative_halfwidth([1.0] * 10) == 0.0


def test_identical_distributions_are_rarely_called_different():
    r = rates(1.0)
    print(f"A/A, {TRIALS} trials of {N} vs {N}: {r}")
    assert r["slower"] <= 0.05 and r["slower"] + r["faster"] <= 0.075  # two-sided: about alpha in all


def test_a_slowdown_of_1_3x_is_called_slower():
    r = rates(1.3)
    print(f"1.3x, {TRIALS} trials of {N} vs {N}: {r}")
    assert r["slower"] >= 0.95 and r["faster"] == 0


def test_a_speedup_is_faster_and_a_tight_unchanged_cell_is_the_same():
    rng = np.random.default_rng(2)
    a = rng.lognormal(0.0, 0.02, 30)
    assert verdict(a, a / 1.5)["verdict"] == "faster"
    same = verdict(a, rng.lognormal(0.0, 0.02, 30))
    assert same["verdict"] == "same" and 0.95 <= same["ratio_lo"] <= same["ratio_hi"] <= 1.05, same
    assert "within +-5%" in same["reason"]


def test_too_few_samples_are_inconclusive_and_say_why():
    v = verdict([1.0, 1.1, 1.05], [2.0, 2.1, 2.2])  # twice as slow, but 3 vs 3 cannot reach p < 0.05
    assert v["verdict"] == "inconclusive" and v["p_value"] == pytest.approx(0.1)
    assert "too few samples: 3 vs 3 can never reach p < 0.05" in v["reason"] and v["ratio"] == pytest.approx(2.0)
    assert smallest_p(3, 3) == pytest.approx(0.1) and smallest_p(4, 4) < 0.05
    assert verdict([1.0, 1.1, 1.05, 1.02], [2.0, 2.1, 2.2, 2.05])["verdict"] == "slower"  # 4 vs 4 can
    assert verdict([], [1.0])["reason"] == "no samples in A"


def test_a_noisy_unchanged_cell_is_inconclusive_not_same():
    rng = np.random.default_rng(3)
    v = verdict(busy(rng, 10), busy(rng, 10))
    assert v["verdict"] == "inconclusive" and "wider than +-5%" in v["reason"], v


def test_a_small_real_change_below_min_effect_is_not_slower():
    rng = np.random.default_rng(4)
    a = rng.lognormal(0.0, 0.01, 200)
    v = verdict(a, 1.03 * rng.lognormal(0.0, 0.01, 200))
    assert v["p_value"] < 1e-6 and v["verdict"] == "same", v  # shown, but smaller than the 5% that counts
    assert verdict(a, 1.03 * rng.lognormal(0.0, 0.01, 200), min_effect=0.02)["verdict"] == "slower"


def test_mann_whitney_ratio_and_speedup_intervals():
    assert mann_whitney([1, 2, 3, 4], [5, 6, 7, 8]) == pytest.approx(2 / 70)
    assert mann_whitney([1.0] * 5, [1.0] * 5) == 1.0 and math.isnan(mann_whitney([], [1.0]))
    rng = np.random.default_rng(5)
    a, b = busy(rng, 40), busy(rng, 40, 2.0)
    lo, hi = ratio_ci(a, b)
    assert lo < np.median(b) / np.median(a) < hi and lo > 1.5 and hi < 2.7
    assert ratio_ci(a, b) == (lo, hi)  # seeded
    slo, shi = speedup_ci(b, a)  # the cell (a) takes half the base's (b) time: speedup about 2
    assert slo < 2.0 < shi and (slo, shi) == pytest.approx(ratio_ci(a, b))
    assert ratio_ci(rng.random(50_000) + 1, rng.random(50_000) + 1, n_boot=50)  # large samples, bounded memory


def test_each_verdict_has_its_meaning():
    m = meanings(0.1, 0.01)
    assert set(m) == {"slower", "faster", "same", "inconclusive"} and "10%" in m["slower"] and "0.01" in m["slower"]
