"""Loss -> benchmark accuracy: a sigmoid in the loss, from chance level (floor) up to a ceiling.

Benchmarks are predicted through the loss because the loss is what a scaling law extrapolates; accuracy itself
is flat at chance for small models and saturates for big ones, so a straight line in the loss would be wrong
at both ends. The floor is fixed at chance when it is known (0.25 for 4-choice MMLU): small grids rarely reach
the regime where the curve leaves chance, so a fitted floor would be guessed, not measured.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy.optimize import least_squares

from llmctl.core import config
from llmctl.core.errors import UserError

SIGMOID_PARAMS = ("floor", "ceiling", "k", "l0")


@dataclasses.dataclass
class BenchmarkFit:
    """acc = floor + (ceiling - floor) * sigmoid(-k (L - l0)), and bootstrap samples of the 4 parameters."""

    name: str
    floor: float
    ceiling: float
    k: float
    l0: float
    n_points: int
    rmse: float
    samples: dict[str, list[float]] | None = None

    def accuracy(self, loss) -> np.ndarray:
        """Predicted accuracy at `loss` (any shape)."""
        return _sigmoid(np.asarray(loss, dtype=float), self.floor, self.ceiling, self.k, self.l0)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> BenchmarkFit:
        """Strict: an unknown key (a typo in a hand-edited fit.json) is a UserError naming it."""
        return config.from_dict(cls, d)


def _sigmoid(loss, floor, ceiling, k, l0):
    # 1/(1+exp(z)) written with tanh so that a steep k does not overflow exp
    return floor + (ceiling - floor) * 0.5 * (1.0 - np.tanh(0.5 * k * (loss - l0)))


def _fit_once(loss, acc, chance, x0) -> np.ndarray:
    """Least squares from x0 = (floor, ceiling, k, l0), floor dropped when fixed; returns all 4 parameters."""
    spread = float(np.ptp(loss)) or 1.0
    lo_l0, hi_l0 = float(loss.min()) - 5 * spread, float(loss.max()) + 5 * spread
    if chance is None:

        def resid(p):
            return _sigmoid(loss, *p) - acc

        lb, ub = [0.0, 0.0, 1e-8, lo_l0], [1.0, 1.0, np.inf, hi_l0]
        p0 = np.clip(x0, np.array(lb) + 1e-9, np.array(ub) - 1e-9)
    else:

        def resid(p):
            return _sigmoid(loss, chance, *p) - acc

        lb, ub = [chance, 1e-8, lo_l0], [1.0, np.inf, hi_l0]
        p0 = np.clip(x0[1:], np.array(lb) + 1e-9, np.array(ub) - 1e-9)
    res = least_squares(resid, p0, bounds=(lb, ub), x_scale="jac", xtol=1e-12, ftol=1e-12, gtol=1e-12)
    return res.x if chance is None else np.r_[chance, res.x]


def _sse(loss, acc, p) -> float:
    return float(np.sum((_sigmoid(loss, *p) - acc) ** 2))


def _starts(loss, acc, chance) -> list[np.ndarray]:
    """A small grid over the midpoint and steepness: the fit is not convex in l0, k."""
    floor = chance if chance is not None else max(0.0, float(acc.min()) - 0.01)
    ceiling = min(1.0, max(float(acc.max()) + 0.01, floor + 0.02))
    spread = float(np.ptp(loss)) or 1.0
    return [
        np.array([floor, ceiling, k / spread, l0])
        for l0 in np.quantile(loss, [0.1, 0.3, 0.5, 0.7, 0.9])
        for k in (2.0, 8.0, 30.0)
    ]


def fit_benchmark(
    name: str, loss, acc, *, chance: float | None = None, bootstrap: int = 200, seed: int = 0
) -> BenchmarkFit:
    """Fit the sigmoid by bounded least squares (ceiling <= 1, k > 0), then `bootstrap` refits on resampled
    points for the intervals `predict_accuracy` reports."""
    loss = np.asarray(loss, dtype=float).ravel()
    acc = np.asarray(acc, dtype=float).ravel()
    if len(loss) != len(acc):
        raise UserError(f"benchmark {name}: {len(loss)} losses but {len(acc)} accuracies")
    if not (np.all(np.isfinite(loss)) and np.all(np.isfinite(acc))):
        raise UserError(f"benchmark {name}: losses and accuracies must be finite")
    if np.any(acc < 0) or np.any(acc > 1):
        raise UserError(f"benchmark {name}: accuracies must be in [0, 1] (fractions, not percent)")
    if chance is not None and not 0 <= chance < 1:
        raise UserError(f"benchmark {name}: chance must be in [0, 1), got {chance}")
    need = 3 if chance is not None else 4
    if len(loss) < need:
        what = (
            "with the floor fixed at chance" if chance is not None else "with a fitted floor (give chance=)"
        )
        raise UserError(f"benchmark {name}: needs >= {need} points {what}, got {len(loss)}")
    if bootstrap < 0:
        raise UserError(f"benchmark {name}: bootstrap must be >= 0, got {bootstrap}")
    fits = [_fit_once(loss, acc, chance, s) for s in _starts(loss, acc, chance)]
    best = min(fits, key=lambda p: _sse(loss, acc, p))
    rmse = float(np.sqrt(_sse(loss, acc, best) / len(loss)))
    samples = None
    if bootstrap:
        rng = np.random.default_rng(seed)
        draws = np.empty((bootstrap, 4))
        for i in range(bootstrap):
            idx = rng.integers(0, len(loss), len(loss))
            draws[i] = _fit_once(loss[idx], acc[idx], chance, best)
        samples = {k: draws[:, j].tolist() for j, k in enumerate(SIGMOID_PARAMS)}
    f, c, k, l0 = (float(v) for v in best)
    return BenchmarkFit(name, f, c, k, l0, len(loss), rmse, samples)


def predict_accuracy(fit: BenchmarkFit, loss_samples, level: float = 0.8) -> tuple[float, float, float]:
    """(median, lo, hi) of the accuracy, the interval covering `level` (80%): every loss sample (the scaling
    law's uncertainty) paired with every bootstrap sample of the sigmoid, so both uncertainties count."""
    ls = np.atleast_1d(np.asarray(loss_samples, dtype=float)).ravel()
    ls = ls[np.isfinite(ls)]
    if ls.size == 0:
        raise UserError(f"benchmark {fit.name}: no finite loss samples to predict from")
    if fit.samples is None:
        params = np.array([[fit.floor, fit.ceiling, fit.k, fit.l0]])
    else:
        params = np.column_stack([np.asarray(fit.samples[k], dtype=float) for k in SIGMOID_PARAMS])
    if ls.size * len(params) > 2_000_000:  # keep the pairing cheap: an even thinning of the loss samples
        ls = np.sort(ls)[:: int(np.ceil(ls.size * len(params) / 2_000_000))]
    acc = _sigmoid(ls[None, :], *(params[:, j, None] for j in range(4)))
    q = 100 * np.array([0.5, (1 - level) / 2, (1 + level) / 2])
    med, lo, hi = np.percentile(acc, q)
    return float(med), float(lo), float(hi)
