"""Rates and scores with their uncertainty, shared by the chapters: the one home of every interval.

* Every share a notebook or benchmark reports (answered, valid, accurate) is a :class:`Rate`: the
  count, the n it is out of, and a 95% Wilson interval (scipy's ``binomtest(...).proportion_ci``),
  which stays inside [0, 1] and is honest at 0/n and n/n where the normal approximation is not.
* A mean score, or the difference between two methods scored on the *same* items, is an
  :class:`Estimate` with a 95% percentile bootstrap interval (scipy's ``bootstrap``; paired for a
  difference, so the items' own difficulty cancels): :func:`mean_interval`, :func:`paired_difference`.
  Whether two methods differ on right/wrong outcomes is :func:`mcnemar`'s exact test.
* A fitted model (a scaling law, Elo ratings) gets its interval from :func:`bootstrap_percentiles`,
  which refits it on resampled items.

``tests/test_stats.py`` checks these against statsmodels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest, bootstrap

__all__ = ["Estimate", "Rate", "auc_report", "bootstrap_auc", "bootstrap_percentiles", "mcnemar", "mean_interval",
           "paired_difference", "rate"]

BOOTSTRAP_ROUNDS = 2000


@dataclass(frozen=True)
class Rate:
    k: int
    n: int
    low: float  # 95% Wilson interval
    high: float

    @property
    def value(self) -> float:
        return self.k / self.n

    def __str__(self) -> str:
        return f"{self.value:.1%} ({self.k}/{self.n}, 95% CI {self.low:.1%}-{self.high:.1%})"

    def as_dict(self) -> dict[str, float | int]:
        return {"rate": round(self.value, 4), "k": self.k, "n": self.n,
                "ci95": [round(self.low, 4), round(self.high, 4)]}


def rate(k: int, n: int, confidence: float = 0.95) -> Rate:
    """``k`` successes out of ``n`` trials, with a Wilson interval at ``confidence``."""
    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"a rate needs 0 <= k <= n and n > 0, got k={k}, n={n}")
    k, n = int(k), int(n)  # numpy counts become plain ints, so that a Rate is always JSON-ready
    interval = binomtest(k, n).proportion_ci(confidence, method="wilson")
    return Rate(k, n, float(interval.low), float(interval.high))


@dataclass(frozen=True)
class Estimate:
    """A mean (or a mean difference) over ``n`` items with its 95% bootstrap interval."""

    value: float
    low: float
    high: float
    n: int

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval lies wholly on one side of 0 (for a difference: a detected effect)."""
        return self.low > 0 or self.high < 0

    def __str__(self) -> str:
        return f"{self.value:+.3g} (n={self.n}, 95% CI {self.low:+.3g} to {self.high:+.3g})"

    def as_dict(self) -> dict[str, float | int | list[float]]:
        return {"value": round(self.value, 4), "n": self.n, "ci95": [round(self.low, 4), round(self.high, 4)]}


def mean_interval(values: Sequence[float], rounds: int = BOOTSTRAP_ROUNDS, seed: int = 0) -> Estimate:
    """The mean of ``values`` with a 95% percentile bootstrap interval (a single value: a zero-width one)."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        raise ValueError("need at least one value")
    if values.size == 1 or np.all(values == values[0]):
        return Estimate(float(values.mean()), float(values.mean()), float(values.mean()), int(values.size))
    ci = bootstrap((values,), np.mean, n_resamples=rounds, method="percentile", random_state=seed).confidence_interval
    return Estimate(float(values.mean()), float(ci.low), float(ci.high), int(values.size))


def paired_difference(a: Sequence[float], b: Sequence[float], rounds: int = BOOTSTRAP_ROUNDS, seed: int = 0
                      ) -> Estimate:
    """mean(a) - mean(b) for two methods scored on the same items (a[i] and b[i] on item i), with a
    95% bootstrap interval that resamples items, keeping each item's pair together."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape:
        raise ValueError(f"paired scores need one of each per item, got {a.size} and {b.size}")
    return mean_interval(a - b, rounds, seed)


def bootstrap_percentiles(n: int, refit: Callable[[np.ndarray], Sequence[float]], rounds: int, seed: int = 0
                          ) -> tuple[np.ndarray, np.ndarray]:
    """95% percentile intervals of the quantities ``refit(indices)`` returns, over ``rounds`` resamples
    of ``n`` items drawn with replacement: (lows, highs), one per quantity."""
    rng = np.random.default_rng(seed)
    samples = np.array([refit(rng.integers(0, n, n)) for _ in range(rounds)], dtype=float)
    low, high = np.percentile(samples, [2.5, 97.5], axis=0)
    return low, high


def mcnemar(a_right: Sequence[bool], b_right: Sequence[bool]) -> dict[str, float | int]:
    """McNemar's exact test of two methods scored on the same items: the items only ``a`` gets
    right, those only ``b`` gets right, and the two-sided binomial p-value of that split
    (1.0 when they never disagree)."""
    pairs = list(zip(a_right, b_right, strict=True))
    a_only, b_only = sum(a and not b for a, b in pairs), sum(b and not a for a, b in pairs)
    p = binomtest(a_only, a_only + b_only).pvalue if a_only + b_only else 1.0
    return {"a_only": a_only, "b_only": b_only, "mcnemar_exact_p": float(p)}


def bootstrap_auc(labels: Sequence[bool], scores: Sequence[float], rounds: int = 1000, seed: int = 0
                  ) -> tuple[float, float, float]:
    """ROC AUC (scikit-learn's) of ``scores`` for ``labels``, and its 95% percentile bootstrap
    interval over examples (resamples holding one class only are skipped)."""
    from sklearn.metrics import roc_auc_score

    labels, scores = np.asarray(labels, dtype=int), np.asarray(scores, dtype=float)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(rounds):
        idx = rng.integers(0, len(labels), len(labels))
        if labels[idx].min() != labels[idx].max():
            draws.append(roc_auc_score(labels[idx], scores[idx]))
    return float(roc_auc_score(labels, scores)), float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))


def auc_report(labels: Sequence[bool], scores: Sequence[float], seed: int = 0) -> dict[str, float | int | list]:
    """:func:`bootstrap_auc` as a JSON-ready dict: ``{"auc", "ci95", "n"}``."""
    auc, low, high = bootstrap_auc(labels, scores, seed=seed)
    return {"auc": round(auc, 4), "ci95": [round(low, 4), round(high, 4)], "n": len(labels)}
