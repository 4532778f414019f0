"""Drift between two windows of traffic: has what users send, or what the model answers, changed?

Three statistics, one per kind of signal, each with the threshold at which :func:`compare_windows`
raises an alert:

* :func:`psi`, the population stability index of a numeric signal (input length, latency, a
  judge's score): bin both windows on the first window's quantiles, then
  ``sum((q - p) * ln(q / p))`` over the bins, p and q the two windows' shares. It is the symmetric
  Kullback-Leibler divergence of the binned distributions; the usual reading is < 0.1 stable,
  0.1-0.25 a moderate shift, > 0.25 a major one (``PSI_ALERT``). No library computes it the way
  monitoring tools do, so it is written here and tested against scipy's ``entropy``.
* a chi-square test of a categorical signal (topic mix, which guardrail fired): scipy's
  ``chi2_contingency`` on the two windows' counts;
* a two-sample Kolmogorov-Smirnov test of a numeric signal's whole distribution: scipy's ``ks_2samp``.

Rates (refusals, hallucination flags) are compared with Fisher's exact test, also scipy's.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["ALPHA", "PSI_ALERT", "DriftCheck", "compare_windows", "psi"]

PSI_ALERT = 0.25
ALPHA = 0.01  # a test's p-value below this raises an alert
_FLOOR = 1e-4  # a bin's share is never taken below this, so an empty bin does not make PSI infinite


@dataclass(frozen=True)
class DriftCheck:
    signal: str
    statistic: str  # "psi", "chi2", "ks" or "fisher"
    value: float
    p_value: float | None
    alert: bool

    def __str__(self) -> str:
        p = "" if self.p_value is None else f", p = {self.p_value:.2g}"
        return f"{self.signal}: {self.statistic} = {self.value:.3g}{p}{' ALERT' if self.alert else ''}"


def psi(expected: Sequence[float], actual: Sequence[float], bins: int = 10) -> float:
    """Population stability index of ``actual`` against ``expected`` (two 1-D samples), on
    ``bins`` quantile bins of ``expected`` (fewer where its values repeat); shares are floored at
    1e-4 so that an empty bin gives a large, finite index."""
    expected, actual = np.asarray(expected, dtype=float), np.asarray(actual, dtype=float)
    if expected.size == 0 or actual.size == 0:
        raise ValueError("PSI needs at least one value in each window")
    inner = np.unique(np.quantile(expected, np.linspace(0, 1, bins + 1)[1:-1]))
    p = np.bincount(np.searchsorted(inner, expected, side="right"), minlength=inner.size + 1) / expected.size
    q = np.bincount(np.searchsorted(inner, actual, side="right"), minlength=inner.size + 1) / actual.size
    p, q = np.maximum(p, _FLOOR), np.maximum(q, _FLOOR)
    return float(np.sum((q - p) * np.log(q / p)))


def compare_windows(before: dict[str, Sequence], after: dict[str, Sequence]) -> list[DriftCheck]:
    """One check per signal present in both windows. A signal of numbers gets PSI and a KS test; of
    booleans, Fisher's exact test of the two rates; of strings, a chi-square test of the mix."""
    from scipy.stats import chi2_contingency, fisher_exact, ks_2samp

    checks = []
    for signal in before.keys() & after.keys():
        a, b = list(before[signal]), list(after[signal])
        if not a or not b:
            raise ValueError(f"signal {signal!r} has an empty window")
        if all(isinstance(x, bool) for x in a + b):
            table = [[sum(a), len(a) - sum(a)], [sum(b), len(b) - sum(b)]]
            p = float(fisher_exact(table).pvalue)
            checks.append(DriftCheck(signal, "fisher", float(np.mean(b) - np.mean(a)), p, bool(p < ALPHA)))
        elif all(isinstance(x, str) for x in a + b):
            categories = sorted(set(a) | set(b))
            counts = [[Counter(a)[c] for c in categories], [Counter(b)[c] for c in categories]]
            if len(categories) < 2:
                checks.append(DriftCheck(signal, "chi2", 0.0, 1.0, False))
                continue
            result = chi2_contingency(counts)
            checks.append(DriftCheck(signal, "chi2", float(result.statistic), float(result.pvalue),
                                     bool(result.pvalue < ALPHA)))
        else:
            index = psi(a, b)
            checks.append(DriftCheck(signal, "psi", index, None, bool(index > PSI_ALERT)))
            ks = ks_2samp(a, b)
            checks.append(DriftCheck(signal, "ks", float(ks.statistic), float(ks.pvalue), bool(ks.pvalue < ALPHA)))
    return sorted(checks, key=lambda c: (c.signal, c.statistic))
