"""The statistics of verdicts (bench/regress/stats.py) on synthetic timings with fixed seeds: the median's
interval covers; paired rounds of an unchanged revision give no false verdict over whole runs (Holm), a 1.3x
and a 1.1x change are caught and their intervals cover the truth, even with bursts of load in some rounds;
each verdict is its interval read against the band. The rates measured are printed (pytest -s) and asserted."""
import math

import numpy as np
import pytest

from bench.regress.stats import (
    Estimate,
    decide,
    holm,
    meanings,
    median_ci,
    paired,
    ratio_ci,
    relative_halfwidth,
    speedup_ci,
    unpaired,
)

TRIALS, ROUNDS, COMPARISONS = 150, 16, 6
SIGMA = 0.06  # a slot's spread as ab measured it beside a spinning core (2-vCPU EPYC): 5-7%


def slots(rng, rounds: int, sigma: float, burst: float = 0.1):
    """A side's slot values, two a round, each 1 x lognormal noise; in about ``burst`` of the rounds one slot
    caught a burst of load (1.5x to 3x): the heavy tail of a busy machine."""
    x = rng.lognormal(0.0, sigma, (rounds, 2))
    hit = rng.random(rounds) < burst
    x[hit, rng.integers(0, 2, hit.sum())] *= rng.uniform(1.5, 3.0, hit.sum())
    return x


def runs(effect: float, sigma: float = SIGMA, rounds: int = ROUNDS, seed: int = 0, burst: float = 0.1):
    """``TRIALS`` runs of ``COMPARISONS`` paired comparisons each of B = ``effect`` x A; their verdicts."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(TRIALS):
        ests = [paired(slots(rng, rounds, sigma, burst), effect * slots(rng, rounds, sigma, burst))
                for _ in range(COMPARISONS)]
        out.append(decide(ests))
    return out


def test_median_ci_covers_the_true_median_about_as_often_as_it_says():
    rng = np.random.default_rng(1)
    for n in (10, 30):
        covered = np.mean([lo <= 1.0 <= hi for lo, hi in (median_ci(rng.lognormal(0, 0.2, n)) for _ in range(400))])
        assert 0.93 <= covered <= 1.0, (n, covered)  # order statistics: at least 95% up to sampling noise
    assert all(math.isnan(v) for v in median_ci([]))
    assert median_ci([3.0, 1.0, 2.0]) == (1.0, 3.0)  # under 6 samples: (min, max)
    assert relative_halfwidth([1.0] * 10) == 0.0


def test_an_unchanged_revision_gives_no_false_verdict_over_whole_runs():
    verdicts = [[v["verdict"] for v in run] for run in runs(1.0)]
    false_runs = sum(any(v in ("slower", "faster") for v in run) for run in verdicts)
    print(f"A/A, {TRIALS} runs of {COMPARISONS} comparisons, {ROUNDS} rounds: {false_runs} runs with a false verdict")
    assert false_runs <= 0.05 * TRIALS  # Holm: the chance of any false verdict in a run <= alpha


def test_a_quiet_unchanged_revision_is_called_the_same():
    quiet = [v["verdict"] for run in runs(1.0, sigma=0.01, rounds=8, burst=0.0) for v in run]
    assert quiet.count("same") >= 0.95 * len(quiet)


@pytest.mark.parametrize("effect, power", [(1.3, 0.9), (1.1, 0.0)])
def test_a_change_is_caught_and_its_interval_covers_it(effect, power):
    all_runs = runs(effect, seed=int(effect * 10))
    caught = np.mean([v["verdict"] == "slower" for run in all_runs for v in run])
    covered = np.mean([v["ratio_lo"] <= effect <= v["ratio_hi"] for run in all_runs for v in run])
    print(f"{effect}x: caught {caught:.1%}, interval covered {covered:.1%}")
    assert caught >= power and covered >= 0.95 and not any(v["verdict"] == "faster" for r in all_runs for v in r)


def test_each_verdict_is_its_interval_read_against_the_band():
    rng = np.random.default_rng(7)
    for _ in range(300):
        e = Estimate(rng.normal(0, 0.1), rng.uniform(0.001, 0.05), rng.integers(2, 30), 10, 10, True)
        a = rng.choice([0.05, 0.01, 0.0083])
        lo, hi = e.interval(a)
        p_diff, p_same = e.p_values(0.05)
        assert (p_diff < a) == (lo > 1.05 or hi < 0.95)
        assert (p_same < a) == (lo > 0.95 and hi < 1.05)


def test_holm_steps_down_and_says_each_level():
    rejected, levels = holm([0.01, 0.04, 0.03, 0.005], 0.05)
    assert rejected == [True, False, False, True]
    assert levels == pytest.approx([0.05 / 3, 0.05 / 1, 0.05 / 2, 0.05 / 4])
    assert holm([], 0.05) == ([], [])


def test_decide_says_why_and_how_many_more_rounds():
    rng = np.random.default_rng(3)
    few = paired(slots(rng, 4, 0.08, 0), slots(rng, 4, 0.08, 0))
    v = decide([few, None])
    assert v[0]["verdict"] == "inconclusive" and "more round(s) would likely decide it" in v[0]["reason"], v
    assert v[1]["verdict"] == "inconclusive" and "too few" in v[1]["reason"]
    need = few.rounds_to_decide(0.05, 0.05)
    assert need > 4
    more = paired(slots(rng, 3 * need, 0.08, 0), slots(rng, 3 * need, 0.08, 0))
    assert decide([more])[0]["verdict"] == "same"
    assert paired([[1.0, 1.0]] * 2, [[2.0, 2.0]] * 2) is None  # 3 rounds at least


def test_unpaired_samples_of_two_runs():
    rng = np.random.default_rng(2)
    a = rng.lognormal(0.0, 0.02, 30)
    faster, same = decide([unpaired(a, a / 1.5), unpaired(a, rng.lognormal(0.0, 0.02, 30))])
    assert faster["verdict"] == "faster" and same["verdict"] == "same", (faster, same)
    assert 0.95 <= same["ratio_lo"] <= same["ratio_hi"] <= 1.05 and "within +-5%" in same["reason"]
    noisy = decide([unpaired(rng.lognormal(0, 0.2, 10), rng.lognormal(0, 0.2, 10))])[0]
    assert noisy["verdict"] == "inconclusive" and "reaches across" in noisy["reason"]
    small = decide([unpaired(a, 1.03 * rng.lognormal(0.0, 0.01, 200))], min_effect=0.05)[0]
    assert small["verdict"] == "same"  # a real change, smaller than the 5% that counts
    assert unpaired([1.0, 2.0], [1.0, 2.0, 3.0]) is None


def test_ratio_and_speedup_intervals():
    rng = np.random.default_rng(5)
    a, b = rng.lognormal(0, 0.2, 40), 2.0 * rng.lognormal(0, 0.2, 40)
    lo, hi = ratio_ci(a, b)
    assert lo < np.median(b) / np.median(a) < hi and lo > 1.5 and hi < 2.7
    assert ratio_ci(a, b) == (lo, hi)  # seeded
    slo, shi = speedup_ci(b, a)  # the cell (a) takes half the base's (b) time: speedup about 2
    assert slo < 2.0 < shi and (slo, shi) == pytest.approx(ratio_ci(a, b))
    assert ratio_ci(rng.random(50_000) + 1, rng.random(50_000) + 1, n_boot=50)  # large samples, bounded memory


def test_each_verdict_has_its_meaning():
    m = meanings(0.1, 0.01)
    assert set(m) == {"slower", "faster", "same", "inconclusive"} and "10%" in m["slower"] and "0.01" in m["slower"]
