"""Scaling laws: Kaplan et al. (2020), Chinchilla (Hoffmann et al., 2022) and what follows from them.

Units: N parameters, D training tokens, C training FLOPs with C = 6 N D (forward + backward,
see :func:`course_utils.architecture.sizing.flops_per_token`), loss in nats per token.

* Kaplan: L(N) = (N_c / N)^a_N, L(D) = (D_c / D)^a_D, L(C_min) = (C_c / C_min)^a_C, and the joint
  L(N, D) = [(N_c / N)^(a_N / a_D) + D_c / D]^a_D; compute-efficient models grow as N ~ C^0.73.
* Chinchilla: L(N, D) = E + A / N^alpha + B / D^beta. Minimising it under C = 6 N D gives
  N* = G (C/6)^a and D* = (C/6)^b / G with a = beta / (alpha + beta), b = alpha / (alpha + beta),
  G = (alpha A / (beta B))^(1 / (alpha + beta)).

:func:`fit_chinchilla` fits the law the way the paper did (Approach 3): a Huber loss on
log-losses, from a grid of starting points, optimised to tight tolerances.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import optimize
from scipy.special import logsumexp

from course_utils.stats import bootstrap_percentiles

__all__ = [
    "CHINCHILLA_TABLE3", "EPOCH", "HOFFMANN", "KAPLAN", "ChinchillaFit", "ChinchillaLaw", "KaplanLaw",
    "compute_optimal", "fit_chinchilla", "fit_power_law", "inference_aware_optimum", "isoflop_optimum",
    "training_flops",
]


def training_flops(n_params: float, n_tokens: float) -> float:
    """C = 6 N D: two FLOPs per parameter per token forward, four backward."""
    return 6.0 * n_params * n_tokens


@dataclass(frozen=True)
class KaplanLaw:
    """Kaplan et al. (2020) fits for WebText2 (their table 5 and section 6)."""

    alpha_n: float = 0.076
    n_c: float = 8.8e13
    alpha_d: float = 0.095
    d_c: float = 5.4e13
    alpha_c: float = 0.050
    c_c_pf_days: float = 3.1e8  # C_min in PF-days (1 PF-day = 8.64e19 FLOPs)
    n_opt_per_pf_day: float = 1.3e9  # compute-efficient size at C_min = 1 PF-day (their figure 14)
    allocation_exponent: float = 0.73  # N_opt ~ C^0.73

    def optimal_params(self, flops):
        """Kaplan's compute-efficient (non-embedding) model size for a budget in FLOPs."""
        return self.n_opt_per_pf_day * (np.asarray(flops, dtype=float) / 8.64e19) ** self.allocation_exponent

    def loss_n(self, n):
        return (self.n_c / np.asarray(n, dtype=float)) ** self.alpha_n

    def loss_d(self, d):
        return (self.d_c / np.asarray(d, dtype=float)) ** self.alpha_d

    def loss_c(self, flops):
        return (self.c_c_pf_days / (np.asarray(flops, dtype=float) / 8.64e19)) ** self.alpha_c

    def loss(self, n, d):
        n, d = np.asarray(n, dtype=float), np.asarray(d, dtype=float)
        return ((self.n_c / n) ** (self.alpha_n / self.alpha_d) + self.d_c / d) ** self.alpha_d


@dataclass(frozen=True)
class ChinchillaLaw:
    """L(N, D) = E + A / N^alpha + B / D^beta."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float

    def loss(self, n, d):
        n, d = np.asarray(n, dtype=float), np.asarray(d, dtype=float)
        return self.E + self.A / n**self.alpha + self.B / d**self.beta

    @property
    def a(self) -> float:
        """Exponent of N* in C: N* ~ C^a."""
        return self.beta / (self.alpha + self.beta)

    @property
    def b(self) -> float:
        """Exponent of D* in C: D* ~ C^b (a + b = 1)."""
        return self.alpha / (self.alpha + self.beta)

    @property
    def G(self) -> float:
        return (self.alpha * self.A / (self.beta * self.B)) ** (1 / (self.alpha + self.beta))


KAPLAN = KaplanLaw()
HOFFMANN = ChinchillaLaw(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)  # Approach 3, as published
EPOCH = ChinchillaLaw(E=1.8172, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658)  # Besiroglu et al. 2024

# Chinchilla's Table 3: (parameters, FLOPs, tokens) of compute-optimal models by Approach 1.
CHINCHILLA_TABLE3 = [
    (400e6, 1.92e19, 8.0e9), (1e9, 1.21e20, 20.2e9), (10e9, 1.23e22, 205.1e9), (67e9, 5.76e23, 1.5e12),
    (175e9, 3.85e24, 3.7e12), (280e9, 9.90e24, 5.9e12), (520e9, 3.43e25, 11.0e12), (1e12, 1.27e26, 21.2e12),
    (10e12, 1.30e28, 216.2e12),
]


def compute_optimal(flops: float, law: ChinchillaLaw, method: str = "closed") -> tuple[float, float]:
    """(N*, D*) minimising ``law`` at a training budget of ``flops`` (C = 6 N D).

    ``method="closed"`` uses the closed form; ``"numeric"`` minimises over log N directly.
    """
    if flops <= 0:
        raise ValueError(f"flops must be positive, got {flops}")
    if method == "closed":
        return law.G * (flops / 6) ** law.a, (flops / 6) ** law.b / law.G
    if method != "numeric":
        raise ValueError(f"method must be 'closed' or 'numeric', got {method!r}")
    def loss_at(log_n: float) -> float:
        n = np.exp(log_n)
        return float(law.loss(n, flops / (6 * n)))

    res = optimize.minimize_scalar(loss_at, bounds=(np.log(1e2), np.log(flops / 6 / 1e2)), method="bounded",
                                   options={"xatol": 1e-10})
    n = float(np.exp(res.x))
    return n, flops / (6 * n)


@dataclass
class ChinchillaFit:
    law: ChinchillaLaw
    objective: float  # summed Huber loss at the optimum
    gradient_norm: float  # at the optimum: small means the optimiser really converged
    iterations: int
    intervals: dict[str, tuple[float, float]] = field(default_factory=dict)  # bootstrap 95% intervals


def _objective(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_l: np.ndarray,
               delta: float) -> tuple[float, np.ndarray]:
    """Summed Huber loss of log L_pred - log L and its gradient; theta = (a, b, e, alpha, beta)."""
    a, b, e, alpha, beta = theta
    terms = np.stack([a - alpha * log_n, b - beta * log_d, np.full_like(log_n, e)])  # (3, n)
    pred = logsumexp(terms, axis=0)
    r = pred - log_l
    small = np.abs(r) <= delta
    value = np.where(small, 0.5 * r**2, delta * (np.abs(r) - 0.5 * delta)).sum()
    dr = np.where(small, r, delta * np.sign(r))  # d Huber / d r
    w = np.exp(terms - pred)  # softmax weights, d pred / d term
    grad = np.array([
        (dr * w[0]).sum(), (dr * w[1]).sum(), (dr * w[2]).sum(),
        -(dr * w[0] * log_n).sum(), -(dr * w[1] * log_d).sum(),
    ])
    return float(value), grad


def _fit_once(log_n, log_d, log_l, delta, starts) -> tuple[np.ndarray, float, float, int]:
    best = None
    for start in starts:
        res = optimize.minimize(_objective, start, args=(log_n, log_d, log_l, delta), jac=True, method="L-BFGS-B",
                                options={"maxiter": 20000, "ftol": 1e-15, "gtol": 1e-12, "maxcor": 50})
        if best is None or res.fun < best.fun:
            best = res
    grad_norm = float(np.linalg.norm(_objective(best.x, log_n, log_d, log_l, delta)[1]))
    return best.x, float(best.fun), grad_norm, int(best.nit)


def _grid() -> np.ndarray:
    """The paper's grid of initialisations over (a, b, e, alpha, beta)."""
    axes = [np.arange(0, 30, 5), np.arange(0, 30, 5), np.arange(-1, 1.5, 0.5), np.arange(0, 2.5, 0.5),
            np.arange(0, 2.5, 0.5)]
    return np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 5).astype(float)


def fit_chinchilla(n, d, loss, delta: float = 1e-3, n_starts: int = 16, bootstrap: int = 0,
                   seed: int = 0) -> ChinchillaFit:
    """Fit L = E + A/N^alpha + B/D^beta the way Hoffmann et al. did (Approach 3).

    The model is written as log L = LSE(a - alpha log N, b - beta log D, e) with A = e^a, B = e^b,
    E = e^e; the loss is a Huber loss (``delta`` 1e-3) summed over runs. Every point of the
    paper's grid of initialisations is scored, and L-BFGS runs to tight tolerances from the best
    ``n_starts`` of them. ``bootstrap`` > 0 refits on resampled runs for 95% intervals.
    """
    log_n, log_d, log_l = (np.log(np.asarray(x, dtype=float)) for x in (n, d, loss))
    if not (log_n.shape == log_d.shape == log_l.shape) or log_n.size < 5:
        raise ValueError("n, d and loss must have the same length, at least 5 runs")
    grid = _grid()
    scores = np.array([_objective(g, log_n, log_d, log_l, delta)[0] for g in grid])
    starts = grid[np.argsort(scores)[:n_starts]]
    theta, value, grad_norm, iterations = _fit_once(log_n, log_d, log_l, delta, starts)
    law = ChinchillaLaw(E=float(np.exp(theta[2])), A=float(np.exp(theta[0])), B=float(np.exp(theta[1])),
                        alpha=float(theta[3]), beta=float(theta[4]))
    fit = ChinchillaFit(law, value, grad_norm, iterations)
    if bootstrap:
        def refit(idx: np.ndarray) -> list[float]:
            t, *_ = _fit_once(log_n[idx], log_d[idx], log_l[idx], delta, [theta])
            with np.errstate(over="ignore"):  # a resample that cannot pin a constant sends it to infinity
                return [np.exp(t[2]), np.exp(t[0]), np.exp(t[1]), t[3], t[4]]

        lo, hi = bootstrap_percentiles(log_n.size, refit, bootstrap, seed)
        fit.intervals = {k: (float(lo[i]), float(hi[i])) for i, k in enumerate(["E", "A", "B", "alpha", "beta"])}
    return fit


def inference_aware_optimum(target_loss: float, inference_tokens: float, law: ChinchillaLaw) -> tuple[float, float]:
    """(N, D_train) reaching ``target_loss`` at the least lifetime cost 6 N D_train + 2 N D_inference.

    Sardana et al. (2023): when a model will serve many tokens, a smaller model trained on more
    tokens than the compute-optimal amount costs less in total.
    """
    if target_loss <= law.E:
        raise ValueError(f"target loss {target_loss} is below the law's irreducible loss E={law.E}")

    def tokens_needed(n: float) -> float:
        gap = target_loss - law.E - law.A / n**law.alpha
        return (law.B / gap) ** (1 / law.beta) if gap > 0 else np.inf

    def cost(log_n: float) -> float:
        n = np.exp(log_n)
        return 6 * n * tokens_needed(n) + 2 * n * inference_tokens

    n_min = (law.A / (target_loss - law.E)) ** (1 / law.alpha)  # below this, no D reaches the target
    res = optimize.minimize_scalar(cost, bounds=(np.log(n_min * 1.0001), np.log(n_min * 1e6)), method="bounded",
                                   options={"xatol": 1e-10})
    n = float(np.exp(res.x))
    return n, float(tokens_needed(n))


def isoflop_optimum(n, loss) -> float:
    """Approach 2, one budget: fit loss = c2 (log N)^2 + c1 log N + c0 and return the N at its vertex."""
    log_n, loss = np.log(np.asarray(n, dtype=float)), np.asarray(loss, dtype=float)
    if log_n.size < 3:
        raise ValueError("an IsoFLOP parabola needs at least 3 model sizes")
    c2, c1, _ = np.polyfit(log_n, loss, 2)
    if c2 <= 0:
        raise ValueError("the losses do not curve upwards around a minimum: widen the range of model sizes")
    return float(np.exp(-c1 / (2 * c2)))


def fit_power_law(x, y) -> tuple[float, float]:
    """(k, p) with y = k x^p, by least squares in log-log space (e.g. N_opt = k C^a)."""
    p, log_k = np.polyfit(np.log(np.asarray(x, dtype=float)), np.log(np.asarray(y, dtype=float)), 1)
    return float(np.exp(log_k)), float(p)
