"""Scaling laws: closed forms, the published tables, and a fit that really converges."""

import csv
from pathlib import Path

import numpy as np
import pytest
from scipy import optimize

from course_utils.scaling import laws
from course_utils.scaling.laws import CHINCHILLA_TABLE3, EPOCH, HOFFMANN, KAPLAN, compute_optimal, fit_chinchilla

EPOCH_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "chinchilla_svg_extracted.csv"


def test_allocation_exponent_of_the_rounded_hoffmann_constants():
    assert round(HOFFMANN.a, 4) == 0.4516
    assert HOFFMANN.a + HOFFMANN.b == pytest.approx(1.0)


@pytest.mark.parametrize("n, flops, d", CHINCHILLA_TABLE3)
def test_table3_rows_satisfy_c_equals_6nd(n, flops, d):
    assert laws.training_flops(n, d) == pytest.approx(flops, rel=0.05)


@pytest.mark.parametrize("law", [HOFFMANN, EPOCH], ids=["hoffmann", "epoch"])
@pytest.mark.parametrize("flops", [1e18, 5.76e23, 1e26])
def test_closed_form_equals_numeric_optimum(law, flops):
    n_closed, d_closed = compute_optimal(flops, law)
    n_num, d_num = compute_optimal(flops, law, method="numeric")
    assert n_closed == pytest.approx(n_num, rel=1e-4) and d_closed == pytest.approx(d_num, rel=1e-4)
    assert laws.training_flops(n_closed, d_closed) == pytest.approx(flops)


def _synthetic(law, noise, seed=0):
    rng = np.random.default_rng(seed)
    n = np.repeat(np.logspace(7, 10, 8), 6)
    d = np.tile(np.logspace(9, 12, 6), 8)
    loss = law.loss(n, d) * np.exp(rng.normal(0, noise, n.size))
    return n, d, loss


def test_fit_recovers_known_constants_from_noisy_points():
    n, d, loss = _synthetic(HOFFMANN, noise=0.002)
    fit = fit_chinchilla(n, d, loss)
    assert fit.law.alpha == pytest.approx(HOFFMANN.alpha, abs=0.03)
    assert fit.law.beta == pytest.approx(HOFFMANN.beta, abs=0.03)
    assert fit.law.E == pytest.approx(HOFFMANN.E, abs=0.05)
    assert fit.law.a == pytest.approx(HOFFMANN.a, abs=0.02)


def test_fit_converges_where_default_lbfgsb_stops_early():
    n, d, loss = _synthetic(HOFFMANN, noise=0.0)
    fit = fit_chinchilla(n, d, loss)
    assert fit.gradient_norm < 1e-6
    log = [np.log(x) for x in (n, d, loss)]
    start = np.array([0.0, 0.0, 0.0, 0.5, 0.5])
    default = optimize.minimize(laws._objective, start, args=(*log, 1e-3), jac=True, method="L-BFGS-B")
    assert fit.objective < default.fun  # scipy's default tolerances stop short of the optimum


def test_bootstrap_intervals_cover_the_truth():
    n, d, loss = _synthetic(HOFFMANN, noise=0.003, seed=1)
    fit = fit_chinchilla(n, d, loss, bootstrap=20, seed=0)
    lo, hi = fit.intervals["alpha"]
    assert lo <= HOFFMANN.alpha <= hi or abs(fit.law.alpha - HOFFMANN.alpha) < 0.02


@pytest.mark.skipif(not EPOCH_DATA.is_file(), reason="the Epoch AI replication data is not beside this checkout")
def test_fit_on_the_chinchilla_data_matches_the_epoch_replication():
    with open(EPOCH_DATA) as f:
        rows = list(csv.DictReader(f))
    n = np.array([float(r["Model Size"]) for r in rows])
    flops = np.array([float(r["Training FLOP"]) for r in rows])
    loss = np.array([float(r["loss"]) for r in rows])
    keep = loss < np.sort(loss)[-5]  # the replication leaves out the five highest-loss runs
    fit = fit_chinchilla(n[keep], flops[keep] / (6 * n[keep]), loss[keep])
    assert fit.law.alpha == pytest.approx(EPOCH.alpha, abs=0.005)
    assert fit.law.beta == pytest.approx(EPOCH.beta, abs=0.005)
    assert fit.law.E == pytest.approx(EPOCH.E, abs=0.01)
    assert fit.law.A == pytest.approx(EPOCH.A, rel=0.05) and fit.law.B == pytest.approx(EPOCH.B, rel=0.05)


def test_inference_demand_shrinks_the_optimal_model():
    target = float(HOFFMANN.loss(7e9, 140e9))
    n0, d0 = laws.inference_aware_optimum(target, 0, HOFFMANN)
    n1, d1 = laws.inference_aware_optimum(target, 2e12, HOFFMANN)
    assert n1 < n0 and d1 > d0
    assert float(HOFFMANN.loss(n1, d1)) == pytest.approx(target, rel=1e-6)


def test_kaplan_laws_agree_with_each_other_in_their_limits():
    k = laws.KAPLAN
    assert float(k.loss(1e9, 1e30)) == pytest.approx(float(k.loss_n(1e9)), rel=1e-6)  # data unlimited
    assert float(k.loss_n(1e9)) > float(k.loss_n(1e10))


def test_kaplan_allocation_grows_as_c_to_the_0_73():
    assert KAPLAN.optimal_params(8.64e19) == pytest.approx(1.3e9)  # 1 PF-day
    assert KAPLAN.optimal_params(8.64e21) / KAPLAN.optimal_params(8.64e19) == pytest.approx(100**0.73)


def test_bad_input_is_explained():
    with pytest.raises(ValueError, match="positive"):
        compute_optimal(0, HOFFMANN)
    with pytest.raises(ValueError, match="at least 5 runs"):
        fit_chinchilla([1, 2], [1, 2], [1, 2])
    with pytest.raises(ValueError, match="irreducible"):
        laws.inference_aware_optimum(1.0, 0, HOFFMANN)


def test_isoflop_approach_recovers_the_allocation_exponent():
    budgets = np.logspace(18, 22, 5)
    optima = []
    for c in budgets:
        n_star, _ = compute_optimal(c, HOFFMANN)
        n = n_star * np.logspace(-0.5, 0.5, 9)
        optima.append(laws.isoflop_optimum(n, HOFFMANN.loss(n, c / (6 * n))))
    _, exponent = laws.fit_power_law(budgets, optima)
    assert exponent == pytest.approx(HOFFMANN.a, abs=0.01)
    with pytest.raises(ValueError, match="curve upwards"):
        laws.isoflop_optimum([1e6, 1e7, 1e8], [1.0, 2.0, 1.5])
