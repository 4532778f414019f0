"""The course's one interval helper against statsmodels (and scipy where statsmodels has no twin)."""

import numpy as np
import pytest
from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar
from statsmodels.stats.proportion import proportion_confint
from statsmodels.stats.weightstats import DescrStatsW

from course_utils.stats import bootstrap_percentiles, mcnemar, mean_interval, paired_difference, rate


@pytest.mark.parametrize(("k", "n"), [(0, 10), (3, 10), (10, 10), (1, 2), (48, 50), (517, 1000)])
def test_rate_is_statsmodels_wilson_interval(k, n):
    low, high = proportion_confint(k, n, alpha=0.05, method="wilson")
    r = rate(k, n)
    assert r.value == k / n
    assert r.low == pytest.approx(low, abs=1e-12) and r.high == pytest.approx(high, abs=1e-12)


@pytest.mark.parametrize("bad", [(1, 0), (-1, 5), (6, 5)])
def test_rate_refuses_impossible_counts(bad):
    with pytest.raises(ValueError, match="0 <= k <= n"):
        rate(*bad)


@pytest.mark.parametrize("seed", range(4))
def test_mcnemar_is_statsmodels_exact_test(seed):
    rng = np.random.default_rng(seed)
    a = rng.random(60) < 0.6
    b = np.where(rng.random(60) < 0.3, ~a, a)
    ours = mcnemar(a.tolist(), b.tolist())
    table = [[int(np.sum(a & b)), int(np.sum(a & ~b))], [int(np.sum(~a & b)), int(np.sum(~a & ~b))]]
    assert ours["a_only"] == table[0][1] and ours["b_only"] == table[1][0]
    assert ours["mcnemar_exact_p"] == pytest.approx(sm_mcnemar(table, exact=True).pvalue, rel=1e-9)


def test_a_paired_difference_agrees_with_the_t_interval_on_a_large_sample():
    """With 400 items the bootstrap and statsmodels' t interval of the mean difference nearly coincide."""
    rng = np.random.default_rng(0)
    difficulty = rng.normal(size=400)
    a = difficulty + rng.normal(0.3, 1, 400)
    b = difficulty + rng.normal(0.0, 1, 400)
    ours = paired_difference(a, b)
    low, high = DescrStatsW(a - b).tconfint_mean(alpha=0.05)
    assert ours.value == pytest.approx(np.mean(a - b)) and ours.n == 400
    assert ours.low == pytest.approx(low, abs=0.02) and ours.high == pytest.approx(high, abs=0.02)
    assert ours.excludes_zero


def test_pairing_makes_a_shared_difficulty_cancel():
    """The same effect, hidden by item difficulty when unpaired, is detected paired."""
    rng = np.random.default_rng(1)
    difficulty = rng.normal(0, 5, 40)
    a, b = difficulty + 0.5 + rng.normal(0, 0.2, 40), difficulty + rng.normal(0, 0.2, 40)
    paired = paired_difference(a, b)
    unpaired_low = mean_interval(a).low - mean_interval(b).high  # the crude unpaired bound
    assert paired.excludes_zero and unpaired_low < 0


def test_mean_interval_covers_the_true_mean_about_95_percent_of_the_time():
    rng = np.random.default_rng(2)
    covered = 0
    for i in range(200):
        sample = rng.exponential(1.0, 50)
        e = mean_interval(sample, rounds=500, seed=i)
        covered += e.low <= 1.0 <= e.high
    assert 0.88 <= covered / 200 <= 0.99, covered  # percentile intervals run a little narrow


def test_degenerate_and_mismatched_inputs():
    assert mean_interval([2.0, 2.0, 2.0]).as_dict() == {"value": 2.0, "n": 3, "ci95": [2.0, 2.0]}
    with pytest.raises(ValueError, match="one of each per item"):
        paired_difference([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="at least one"):
        mean_interval([])


def test_bootstrap_percentiles_of_a_refitted_mean_match_the_mean_interval():
    values = np.random.default_rng(3).normal(size=200)
    low, high = bootstrap_percentiles(len(values), lambda idx: [values[idx].mean()], rounds=4000, seed=0)
    e = mean_interval(values, rounds=4000)
    assert low[0] == pytest.approx(e.low, abs=0.02) and high[0] == pytest.approx(e.high, abs=0.02)
