"""Lab 02's reference solution agrees with the course's scaling-law code and a numeric optimum."""

import numpy as np
import pytest
from lab_solutions import solution_namespace
from scipy import optimize
from scipy.special import logsumexp

from course_utils.scaling.laws import EPOCH, HOFFMANN, ChinchillaLaw, compute_optimal, fit_chinchilla


@pytest.fixture(scope="module")
def lab():
    return solution_namespace("02_scaling_laws_lab.ipynb", {"np": np, "optimize": optimize, "logsumexp": logsumexp})


def _params(law: ChinchillaLaw) -> tuple[float, ...]:
    return law.E, law.A, law.B, law.alpha, law.beta


@pytest.mark.parametrize("law", [HOFFMANN, EPOCH], ids=["hoffmann", "epoch"])
def test_loss_and_allocation_match_the_law_and_a_numeric_minimum(lab, law):
    for n, d in [(1e6, 1e8), (7e9, 2e12), (70e9, 1.4e12)]:
        assert lab["chinchilla_loss"](n, d, *_params(law)) == pytest.approx(float(law.loss(n, d)), rel=1e-12)
    for flops in (1e19, 5.76e23, 1e26):
        n, d, loss = lab["optimal_allocation"](flops, *_params(law))
        n_num, d_num = compute_optimal(flops, law, method="numeric")  # minimised over N, not the closed form
        assert n == pytest.approx(n_num, rel=1e-3) and d == pytest.approx(d_num, rel=1e-3)
        assert 6 * n * d == pytest.approx(flops, rel=1e-9)
        assert loss == pytest.approx(float(law.loss(n_num, d_num)), rel=1e-9)


def test_fit_recovers_a_known_law_like_the_course_fit(lab):
    truth = ChinchillaLaw(E=1.9, A=300.0, B=900.0, alpha=0.32, beta=0.36)
    rng = np.random.default_rng(0)
    n = np.repeat([1e7, 3e7, 1e8, 3e8, 1e9, 3e9], 4)
    d = np.tile([2e9, 2e10, 2e11, 2e12], 6) / np.sqrt(n / 1e7)
    loss = truth.loss(n, d) * np.exp(rng.normal(0, 0.002, n.size))
    E, A, B, alpha, beta = lab["fit_scaling_law"](n.tolist(), d.tolist(), loss.tolist())
    course = fit_chinchilla(n, d, loss).law
    for ours, theirs in zip((E, A, B, alpha, beta), _params(course), strict=True):
        assert ours == pytest.approx(theirs, rel=0.02)
    assert alpha == pytest.approx(truth.alpha, rel=0.1) and beta == pytest.approx(truth.beta, rel=0.1)
