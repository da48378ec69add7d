"""Chinchilla approach 3: fit L(N, D) = E + A/N^alpha + B/D^beta to (params, tokens, loss) points.

The method is Hoffmann et al. (2022) as replicated by Besiroglu et al. (2024): with e = log E, a = log A,
b = log B the predicted log-loss is LSE(a - alpha log N, b - beta log D, e), and the objective is the SUM over
points of Huber_delta(predicted - log L) with delta = 1e-3, minimised by L-BFGS-B from a grid of starts.

Two details decide whether the answer (and its bootstrap intervals) can be trusted, and both are pinned by
tests: the objective is the sum, not the mean (a mean is n times smaller, and L-BFGS-B's tolerances are
absolute once the objective is below 1, so it stops early), and every bootstrap resample is refitted to
convergence (a warm start stopped at default tolerances barely moves from the full fit, and the intervals come
out far too narrow). Convergence is reported, not assumed: `LawFit.grad_norm` is the gradient norm at the
answer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
from collections.abc import Callable

import numpy as np
from scipy.optimize import minimize

from llmctl.core import config
from llmctl.core.errors import UserError

HUBER_DELTA = 1e-3
PARAMS = ("E", "A", "B", "alpha", "beta")

# Hoffmann et al.'s grid of starts: alpha, beta in {0, .5, ..., 2}, e in {-1, -.5, ..., 1},
# a, b in {0, 5, ..., 25}.
_GRID_ALPHA = np.arange(0.0, 2.01, 0.5)
_GRID_E = np.arange(-1.0, 1.01, 0.5)
_GRID_AB = np.arange(0.0, 25.1, 5.0)
# L-BFGS-B settings. The objective is ~1e-4..1e-2 for noisy data, and scipy's ftol is a drop relative to
# max(|f|, 1), i.e. absolute here: the default (2.2e-9) and gtol 1e-5 stop a few digits in. These run it to
# about machine precision (a further 1e-13 changes alpha by ~1e-8); `converged` is then judged by the
# gradient.
_LBFGS = {"maxiter": 20_000, "maxfun": 40_000, "ftol": 1e-17, "gtol": 1e-11, "maxcor": 20}
# A fit counts as converged when its gradient norm (in e, a, b, alpha, beta) is below this share of the
# largest gradient the data could produce (see grad_tolerance).
_CONVERGED_RTOL = 1e-7
# The exponents are kept >= 0: a negative alpha or beta (loss rising with N or D at fixed other) is not a
# scaling law, and grids far from compute-optimal (toy CPU sweeps) pull an unbounded fit there. An exponent on
# its bound is reported (`at_bound`), so the reader knows the runs do not pin it.
_BOUNDS = [(None, None)] * 3 + [(0.0, None)] * 2
_N_STARTS = 5  # best grid starts refined by L-BFGS-B in a full fit
_BOOT_POOL = 32  # full-data grid starts re-scored on each resample
_BOOT_RESTARTS = 3  # further starts for a resample whose first two runs did not converge


@dataclasses.dataclass
class LawFit:
    """A fitted L(N, D) with the evidence that the optimiser got there (objective, gradient norm)."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    objective: float
    grad_norm: float
    converged: bool
    n_points: int
    huber_delta: float = HUBER_DELTA

    def loss(self, N, D) -> np.ndarray:
        """Predicted loss E + A/N^alpha + B/D^beta (numpy broadcasting over N and D)."""
        N, D = np.asarray(N, dtype=float), np.asarray(D, dtype=float)
        return self.E + self.A / N**self.alpha + self.B / D**self.beta

    def optimal(self, C) -> tuple[np.ndarray, np.ndarray]:
        """Compute-optimal (N, D) at budget C = 6 N D: the law's minimum on that line, in closed form."""
        C = np.asarray(C, dtype=float)
        s = self.alpha + self.beta
        G = (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / s)
        N = G * (C / 6.0) ** (self.beta / s)
        return N, (C / 6.0) / N

    def exponents(self) -> tuple[float, float]:
        """(a, b) with N_opt ∝ C^a and D_opt ∝ C^b: the numbers that decide how to spend a bigger budget."""
        s = self.alpha + self.beta
        return self.beta / s, self.alpha / s

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> LawFit:
        """Strict: an unknown key (a typo in a hand-edited fit.json) is a UserError naming it."""
        return config.from_dict(cls, d)


def _check(N, D, L, delta: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logs of the validated inputs. The law has five parameters: five points fit exactly and test nothing."""
    if not delta > 0:
        raise UserError(f"the Huber delta must be positive, got {delta}")
    arrays = []
    for name, x in (("N (params)", N), ("D (tokens)", D), ("L (loss)", L)):
        x = np.asarray(x, dtype=float).ravel()
        if not np.all(np.isfinite(x)):
            raise UserError(f"{name} has non-finite values")
        if np.any(x <= 0):
            raise UserError(f"{name} must be positive, got {x[x <= 0][0]:g}")
        arrays.append(x)
    if not len(arrays[0]) == len(arrays[1]) == len(arrays[2]):
        raise UserError(f"N, D and L differ in length: {len(arrays[0])}, {len(arrays[1])}, {len(arrays[2])}")
    if len(arrays[0]) <= len(PARAMS):
        raise UserError(
            f"approach 3 fits {len(PARAMS)} parameters and needs more points than that, got {len(arrays[0])}"
        )
    return np.log(arrays[0]), np.log(arrays[1]), np.log(arrays[2])


def objective(
    theta, logN, logD, logL, delta: float = HUBER_DELTA, weights: np.ndarray | None = None
) -> tuple[float, np.ndarray]:
    """Summed Huber objective and its analytic gradient at theta = (e, a, b, alpha, beta).

    `weights` are per-point multiplicities: a bootstrap resample is the same points counted 0, 1, 2... times,
    so it is evaluated on the distinct points only.
    """
    e, a, b, alpha, beta = (float(v) for v in theta)
    u1 = a - alpha * logN
    u2 = b - beta * logD
    m = np.maximum(np.maximum(u1, u2), e)  # log-sum-exp shifted by its largest term
    z1, z2, z3 = np.exp(u1 - m), np.exp(u2 - m), np.exp(e - m)
    s = z1 + z2 + z3
    r = m + np.log(s) - logL
    psi = np.clip(r, -delta, delta)  # Huber'(r)
    h = psi * (r - 0.5 * psi)  # = r^2/2 inside delta, delta (|r| - delta/2) outside
    q = psi / s if weights is None else weights * psi / s
    q1, q2 = q * z1, q * z2
    g = np.array([q @ z3, q1.sum(), q2.sum(), -(q1 @ logN), -(q2 @ logD)])
    return float(h.sum() if weights is None else h @ weights), g


def grid_starts() -> np.ndarray:
    """Hoffmann's grid as rows (e, a, b, alpha, beta)."""
    return np.array(list(itertools.product(_GRID_E, _GRID_AB, _GRID_AB, _GRID_ALPHA, _GRID_ALPHA)))


def grid_objective(
    thetas: np.ndarray, logN, logD, logL, delta: float = HUBER_DELTA, weights=None
) -> np.ndarray:
    """The objective at many starts (rows of thetas) at once: choosing where L-BFGS-B begins is one pass."""
    thetas = np.asarray(thetas, dtype=float)
    out = np.empty(len(thetas))
    for i in range(0, len(thetas), 256):  # chunks keep the (starts, points) temporaries small
        t = thetas[i : i + 256, :, None]
        u1 = t[:, 1] - t[:, 3] * logN
        u2 = t[:, 2] - t[:, 4] * logD
        u3 = np.broadcast_to(t[:, 0], u1.shape)
        m = np.maximum(np.maximum(u1, u2), u3)
        pred = m + np.log(np.exp(u1 - m) + np.exp(u2 - m) + np.exp(u3 - m))
        ar = np.abs(pred - logL)
        h = np.where(ar <= delta, 0.5 * ar * ar, delta * (ar - 0.5 * delta))
        out[i : i + 256] = (h if weights is None else h * weights).sum(axis=1)
    return out


class _Problem:
    """One data set (with optional multiplicities), minimised in centred coordinates.

    L-BFGS-B works on (e, a', b', alpha, beta) with a' = a - alpha * mean(log N) (likewise b'): the same
    objective, but a and alpha are no longer nearly collinear (log N is ~20), so it needs about a third fewer
    iterations to reach machine precision.
    """

    def __init__(self, logN, logD, logL, delta: float, weights=None):
        self.logN, self.logD, self.logL, self.delta, self.weights = logN, logD, logL, delta, weights
        self.mx, self.my = float(np.mean(logN)), float(np.mean(logD))
        self.cx, self.cy = logN - self.mx, logD - self.my
        self._tol = grad_tolerance(logN, logD, weights, delta)

    def to_centred(self, theta: np.ndarray) -> np.ndarray:
        e, a, b, al, be = theta
        return np.array([e, a - al * self.mx, b - be * self.my, al, be])

    def from_centred(self, phi: np.ndarray) -> np.ndarray:
        e, a, b, al, be = phi
        return np.array([e, a + al * self.mx, b + be * self.my, al, be])

    def _fun(self, phi):
        return objective(phi, self.cx, self.cy, self.logL, self.delta, self.weights)

    def minimise(self, theta0: np.ndarray) -> tuple[np.ndarray, float, float]:
        """(theta, objective, gradient norm) from an L-BFGS-B run started at theta0.

        A run that stops above the gradient tolerance (its curvature memory spoilt by the Huber kinks) is
        restarted once from where it stopped, with fresh memory.
        """
        x = self.to_centred(theta0)
        for _ in range(2):
            x = minimize(self._fun, x, jac=True, method="L-BFGS-B", bounds=_BOUNDS, options=_LBFGS).x
            theta = self.from_centred(x)
            f, g = objective(theta, self.logN, self.logD, self.logL, self.delta, self.weights)
            gn = float(np.linalg.norm(projected(theta, g)))
            if gn <= self.tolerance():
                break
        return theta, f, gn

    def tolerance(self) -> float:
        return self._tol

    def best_of(self, starts) -> tuple[np.ndarray, float, float]:
        """The lowest objective over L-BFGS-B runs from each start."""
        best = (None, math.inf, math.inf)
        for s in starts:
            t, f, g = self.minimise(s)
            if f < best[1] or best[0] is None:
                best = (t, f, g)
        return best


def projected(theta: np.ndarray, g: np.ndarray) -> np.ndarray:
    """The gradient less the parts an exponent on its bound (0) cannot follow: what must vanish at a bounded
    optimum."""
    g = np.array(g, dtype=float)
    blocked = (np.asarray(theta)[3:] <= 0.0) & (g[3:] > 0)
    g[3:][blocked] = 0.0
    return g


def at_bound(fit: "LawFit") -> list[str]:
    """The exponents a fit left on their bound of 0."""
    return [name for name in ("alpha", "beta") if getattr(fit, name) <= 0.0]


def grad_tolerance(logN, logD, weights=None, delta: float = HUBER_DELTA) -> float:
    """Gradient norm below which a fit of these points (log N, log D, multiplicities) counts as converged.

    Relative to the largest gradient the data could produce (every residual beyond delta, all pulling the same
    way): a fixed absolute number would be loose for a few points and unreachable for thousands.
    """
    logN, logD = np.asarray(logN, dtype=float), np.asarray(logD, dtype=float)
    w = np.ones_like(logN) if weights is None else np.asarray(weights, dtype=float)
    return _CONVERGED_RTOL * delta * float(w @ (1.0 + np.abs(logN) + np.abs(logD)))


def _to_fit(theta: np.ndarray, f: float, g: float, prob: _Problem, n_points: int) -> LawFit:
    e, a, b, al, be = (float(v) for v in theta)
    return LawFit(
        E=math.exp(e),
        A=math.exp(a),
        B=math.exp(b),
        alpha=al,
        beta=be,
        objective=f,
        grad_norm=g,
        converged=bool(np.isfinite(f) and g <= prob.tolerance()),
        n_points=n_points,
        huber_delta=prob.delta,
    )


def _theta(fit: LawFit) -> np.ndarray:
    return np.array([math.log(fit.E), math.log(fit.A), math.log(fit.B), fit.alpha, fit.beta])


def _one_blas_thread():
    """Pin BLAS to one thread while fitting, when threadpoolctl is installed (it is optional).

    L-BFGS-B's 5-parameter linear algebra goes through BLAS; on a busy machine OpenBLAS's thread wake-ups made
    a bootstrap ~2x slower in wall time, never faster.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def _ranked_grid(logN, logD, logL, delta: float, k: int) -> np.ndarray:
    """The k grid starts with the lowest objective, best first."""
    grid = grid_starts()
    vals = grid_objective(grid, logN, logD, logL, delta)
    return grid[np.argsort(vals, kind="stable")[:k]]


def fit_approach3(N, D, L, *, delta: float = HUBER_DELTA, starts=None) -> LawFit:
    """Fit the law by L-BFGS-B from the best few of Hoffmann's grid starts (or from `starts`: rows in
    PARAMS order).

    All 4500 grid starts are scored in one vectorised pass and only the best few are refined: the landscape is
    not convex, but the basins the grid separates are few, and a refinement costs what ~100 scorings do.
    """
    logN, logD, logL = _check(N, D, L, delta)
    prob = _Problem(logN, logD, logL, delta)
    if starts is None:
        cand = _ranked_grid(logN, logD, logL, delta, _N_STARTS)
    else:
        s = np.atleast_2d(np.asarray(starts, dtype=float))
        if s.ndim != 2 or s.shape[1] != len(PARAMS) or len(s) == 0 or np.any(s[:, :3] <= 0):
            raise UserError(f"starts must be rows of {', '.join(PARAMS)} with E, A, B positive")
        cand = np.column_stack([np.log(s[:, :3]), s[:, 3:]])
    with _one_blas_thread():
        theta, f, g = prob.best_of(cand)
    return _to_fit(theta, f, g, prob, len(logN))


def resample_weights(n_points: int, n: int, seed: int = 0) -> np.ndarray:
    """(n, n_points) multiplicities of n bootstrap resamples (points drawn with replacement), as counts.

    Public so that a check can rebuild exactly the resamples `bootstrap` fitted.
    """
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n_points, size=(n, n_points))
    w = np.zeros((n, n_points))
    np.add.at(w, (np.repeat(np.arange(n), n_points), idx.ravel()), 1.0)
    return w


def _refit(prob: _Problem, theta_full: np.ndarray, pool: np.ndarray) -> np.ndarray:
    """One resample's optimum: from the full-data optimum and from the pool's best start on this resample,
    then (only if neither converged) from the next pool starts; the lowest objective wins.

    Two independent starts every time: about one resample in 300 has a lower minimum than the one the warm
    start settles in.
    """
    vals = grid_objective(pool, prob.logN, prob.logD, prob.logL, prob.delta, prob.weights)
    order = np.argsort(vals, kind="stable")
    best = prob.best_of([theta_full, pool[order[0]]])
    for j in order[1 : 1 + _BOOT_RESTARTS]:
        if best[2] <= prob.tolerance():
            break
        t, f, g = prob.minimise(pool[j])
        if f < best[1]:
            best = (t, f, g)
    return best[0]


def bootstrap(
    N,
    D,
    L,
    *,
    n: int = 1000,
    seed: int = 0,
    delta: float = HUBER_DELTA,
    full_fit: LawFit | None = None,
    progress: Callable[[int], object] | None = None,
) -> dict[str, np.ndarray]:
    """Refit the law on `n` resamples of the points (drawn with replacement), each one to convergence.

    Intervals from refits that stop early are too narrow: an under-converged refit stays near its start, the
    full-data optimum. Returns PARAMS name -> (n,) array of refitted values (resample i = resample_weights row
    i).
    """
    logN, logD, logL = _check(N, D, L, delta)
    if n < 1:
        raise UserError(f"bootstrap needs n >= 1 resamples, got {n}")
    if full_fit is None:
        full_fit = fit_approach3(N, D, L, delta=delta)
    theta_full = _theta(full_fit)
    pool = _ranked_grid(logN, logD, logL, delta, _BOOT_POOL)
    W = resample_weights(len(logN), n, seed)
    out = np.empty((n, len(PARAMS)))
    with _one_blas_thread():
        for i in range(n):
            keep = W[i] > 0
            prob = _Problem(logN[keep], logD[keep], logL[keep], delta, W[i, keep])
            out[i] = _refit(prob, theta_full, pool)
            if progress is not None:
                progress(i)
    with np.errstate(over="ignore"):
        out[:, :3] = np.exp(out[:, :3])
    return {name: out[:, j] for j, name in enumerate(PARAMS)}


def intervals(samples: dict[str, np.ndarray], level: float = 0.8) -> dict[str, tuple[float, float]]:
    """Percentile intervals (the level's central share) of each bootstrap sample."""
    if not 0 < level < 1:
        raise UserError(f"interval level must be in (0, 1), got {level}")
    q = 100 * np.array([(1 - level) / 2, (1 + level) / 2])
    return {
        k: tuple(float(v) for v in np.percentile(np.asarray(s, dtype=float), q)) for k, s in samples.items()
    }


def residuals(fit: LawFit, N, D, L) -> np.ndarray:
    """log L - log L_hat: the quantity the fit's Huber loss was applied to."""
    N, D, L = (np.asarray(x, dtype=float) for x in (N, D, L))
    return np.log(L) - np.log(fit.loss(N, D))
