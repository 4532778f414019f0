"""Drift statistics (course_utils/safety/drift.py) against scipy and known cases."""

import numpy as np
import pytest
from scipy.stats import chi2_contingency, entropy, fisher_exact, ks_2samp

from course_utils.safety.drift import PSI_ALERT, compare_windows, psi


def test_psi_is_the_symmetric_kl_divergence_of_the_binned_windows():
    rng = np.random.default_rng(0)
    before, after = rng.normal(0, 1, 5000), rng.normal(0.5, 1.3, 4000)
    edges = np.quantile(before, np.linspace(0, 1, 11)[1:-1])
    p = np.bincount(np.searchsorted(edges, before, side="right"), minlength=10) / before.size
    q = np.bincount(np.searchsorted(edges, after, side="right"), minlength=10) / after.size
    assert psi(before, after) == pytest.approx(entropy(p, q) + entropy(q, p), rel=1e-9)


def test_psi_reads_no_shift_as_stable_and_a_big_shift_as_an_alert():
    rng = np.random.default_rng(1)
    base = rng.lognormal(4, 0.5, 3000)
    assert psi(base, rng.lognormal(4, 0.5, 3000)) < 0.02
    assert psi(base, rng.lognormal(4.6, 0.5, 3000)) > PSI_ALERT
    assert psi([1, 1, 1, 1], [1, 1]) == 0.0  # one repeated value: a single bin, nothing can shift
    assert np.isfinite(psi([1, 2, 3, 4], [100, 200]))  # empty bins are floored, not infinite
    with pytest.raises(ValueError, match="at least one value"):
        psi([], [1.0])


def test_each_signal_kind_gets_its_test_with_scipys_statistic():
    rng = np.random.default_rng(2)
    lengths_a, lengths_b = list(rng.poisson(40, 400)), list(rng.poisson(60, 400))
    topics_a = ["billing"] * 200 + ["tech"] * 150 + ["other"] * 50
    topics_b = ["billing"] * 100 + ["tech"] * 150 + ["other"] * 150
    refused_a, refused_b = [True] * 8 + [False] * 392, [True] * 40 + [False] * 360
    checks = {(c.signal, c.statistic): c for c in compare_windows(
        {"length": lengths_a, "topic": topics_a, "refused": refused_a, "only_before": [1.0]},
        {"length": lengths_b, "topic": topics_b, "refused": refused_b})}
    assert set(checks) == {("length", "psi"), ("length", "ks"), ("topic", "chi2"), ("refused", "fisher")}
    assert checks["length", "ks"].value == pytest.approx(ks_2samp(lengths_a, lengths_b).statistic)
    counts = [[200, 150, 50], [100, 150, 150]]
    assert checks["topic", "chi2"].p_value == pytest.approx(chi2_contingency(counts).pvalue)
    assert checks["refused", "fisher"].p_value == pytest.approx(fisher_exact([[8, 392], [40, 360]]).pvalue)
    assert all(c.alert for c in checks.values())
    assert "ALERT" in str(checks["refused", "fisher"])


def test_two_windows_from_one_source_raise_no_alert():
    rng = np.random.default_rng(3)
    topics = ["a", "b", "c"]

    def window():
        return {"latency": list(rng.gamma(2, 0.1, 500)), "topic": list(rng.choice(topics, 500)),
                "flagged": [bool(x) for x in rng.random(500) < 0.05]}

    assert not any(c.alert for c in compare_windows(window(), window()))
    with pytest.raises(ValueError, match="empty window"):
        compare_windows({"x": []}, {"x": [1.0]})


def test_traffic_windows_follow_their_mix_and_their_shift_shows_in_the_signals():
    from course_utils.safety.traffic import TOPICS, signals, traffic_window

    before = traffic_window(600, {"sentiment": 0.5, "arithmetic": 0.3, "chapter_questions": 0.2}, seed=0)
    assert before == traffic_window(600, {"sentiment": 0.5, "arithmetic": 0.3, "chapter_questions": 0.2}, seed=0)
    share = sum(m.topic == "sentiment" for m in before) / len(before)
    assert 0.44 < share < 0.56 and {m.topic for m in before} == set(TOPICS)
    after = traffic_window(600, {"sentiment": 0.2, "arithmetic": 0.3, "chapter_questions": 0.5}, seed=1,
                           long_share=0.5, pii_share=0.1)
    words = lambda text: len(text.split())  # noqa: E731
    a, b = signals(before, words), signals(after, words)
    assert not any(a["pii_flagged"]) and 0.05 < sum(b["pii_flagged"]) / len(after) < 0.15
    checks = {(c.signal, c.statistic): c for c in compare_windows(a, b)}
    assert all(c.alert for c in checks.values()), [str(c) for c in checks.values()]
    with pytest.raises(ValueError, match="sum to 1"):
        traffic_window(10, {"sentiment": 0.5}, seed=0)


def test_checks_and_their_rates_are_plain_python_so_a_report_is_json_ready():
    import json

    from course_utils.stats import rate

    rng = np.random.default_rng(4)
    checks = compare_windows({"x": list(rng.normal(0, 1, 50)), "f": [True, False] * 25},
                             {"x": list(rng.normal(1, 1, 50)), "f": [True] * 50})
    assert all(type(c.alert) is bool for c in checks)
    assert json.dumps(rate(np.int64(3), np.int64(9)).as_dict())
