"""Compute-optimal hyperparameters as power laws in compute (DeepSeek LLM 2024): lr = c C^a, batch = c C^b.

A sweep at each of a few small budgets gives the best learning rate (or batch size) per budget; a straight
line in log-log through those extrapolates it to the big run's budget, which cannot afford its own sweep.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from llmctl.core import config
from llmctl.core.errors import UserError

from .isoflop import group_by_budget

_WINDOW = 2  # distinct swept values on each side of the best one that the parabola sees


@dataclasses.dataclass
class PowerLaw:
    """y = coef * C^exponent, fitted on n_points budgets."""

    coef: float
    exponent: float
    n_points: int

    def __call__(self, C) -> np.ndarray:
        return self.coef * np.asarray(C, dtype=float) ** self.exponent

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PowerLaw:
        """Strict: an unknown key (a typo in a hand-edited fit.json) is a UserError naming it."""
        return config.from_dict(cls, d)


def _positive(name: str, x) -> np.ndarray:
    x = np.asarray(x, dtype=float).ravel()
    if not np.all(np.isfinite(x)) or np.any(x <= 0):
        raise UserError(f"{name} must be positive and finite")
    return x


def best_per_budget(flops, value, loss, rel_tol: float = 0.05) -> tuple[np.ndarray, np.ndarray]:
    """(budgets, best value) per isoFLOP group: the vertex of a parabola of loss in log(value).

    The vertex (rather than the best run) is used when >= 3 distinct values bracket the minimum, i.e. the best
    run is not at either end of the sweep: a sweep is coarse (often factors of 2), and the vertex interpolates
    between its steps. The parabola is fitted to the best value and up to two distinct values on each side,
    because it is only a local model (far from the optimum loss vs log lr is lopsided: runs diverge on the
    high side). Otherwise (too few values, the minimum at an edge, or a vertex beyond the best value's
    neighbours) the best run's value is all the data supports. A group's budget is the geometric mean of its
    runs' FLOPs.
    """
    flops, value = _positive("FLOPs", flops), _positive("the swept value (lr or batch)", value)
    loss = np.asarray(loss, dtype=float).ravel()
    if not len(flops) == len(value) == len(loss):
        raise UserError(f"flops, value and loss differ in length: {len(flops)}, {len(value)}, {len(loss)}")
    if not np.all(np.isfinite(loss)):
        raise UserError("loss has non-finite values (drop diverged runs, or give them a large finite loss)")
    groups = group_by_budget(flops, rel_tol)
    budgets, best = [], []
    for g in range(groups.max() + 1):
        m = groups == g
        x, y = np.log(value[m]), loss[m]
        xs = np.unique(x)
        j = int(np.argmin(y))
        i = int(np.searchsorted(xs, x[j]))
        opt = float(value[m][j])
        if len(xs) >= 3 and 0 < i < len(xs) - 1:
            near = (x >= xs[max(0, i - _WINDOW)]) & (x <= xs[min(len(xs) - 1, i + _WINDOW)])
            c2, c1, _ = np.polyfit(x[near], y[near], 2)
            if c2 > 0 and xs[i - 1] <= -c1 / (2 * c2) <= xs[i + 1]:
                opt = float(np.exp(-c1 / (2 * c2)))
        budgets.append(float(np.exp(np.mean(np.log(flops[m])))))
        best.append(opt)
    return np.array(budgets), np.array(best)


def fit_power_law(C, y) -> PowerLaw:
    """Least squares of log y on log C (an error of a factor counts the same at every budget)."""
    C, y = _positive("C (FLOPs)", C), _positive("y", y)
    if len(C) != len(y):
        raise UserError(f"C and y differ in length: {len(C)}, {len(y)}")
    if len(np.unique(C)) < 2:
        raise UserError(f"a power law in compute needs >= 2 distinct budgets, got {len(np.unique(C))}")
    slope, icpt = np.polyfit(np.log(C), np.log(y), 1)
    return PowerLaw(coef=float(np.exp(icpt)), exponent=float(slope), n_points=len(C))
