"""Chinchilla approach 2: the minimum of each isoFLOP profile, then power laws N_opt ∝ C^a and D_opt ∝ C^b.

It assumes nothing about the law's form beyond a smooth minimum per budget, so it is a check on approach 3's
parametric fit: when the two disagree on the exponents, the five-parameter law is not describing the data.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from llmctl.core import config
from llmctl.core.errors import UserError


@dataclasses.dataclass
class IsoFlopFit:
    """Per-budget minima (the parabola vertices) and the power laws through them."""

    budgets: list[float]
    n_opt: list[float]
    d_opt: list[float]
    loss_opt: list[float]
    parabolas: list[
        list[float]
    ]  # per budget: L as a quadratic in log N, np.polyfit order (highest power first)
    a: float  # N_opt ∝ C^a
    b: float  # D_opt ∝ C^b
    n_coef: float  # N_opt = n_coef * C^a
    d_coef: float  # D_opt = d_coef * C^b

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> IsoFlopFit:
        """Strict: an unknown key (a typo in a hand-edited fit.json) is a UserError naming it."""
        return config.from_dict(cls, d)

    def optimal(self, C) -> tuple[np.ndarray, np.ndarray]:
        """Compute-optimal (N, D) at budget(s) C from the two power laws."""
        C = np.asarray(C, dtype=float)
        return self.n_coef * C**self.a, self.d_coef * C**self.b


def group_by_budget(flops, rel_tol: float = 0.05) -> np.ndarray:
    """Integer group id per point (0 = smallest budget): FLOPs within rel_tol of a group's smallest share it.

    Runs planned at one budget land a little apart (rounded widths, whole steps), so exact equality would
    split one profile into many. Anchoring each group at its smallest member (not chaining neighbours) keeps a
    run of budgets each 4% apart from collapsing into one.
    """
    f = np.asarray(flops, dtype=float).ravel()
    if f.size == 0:
        raise UserError("no points to group by FLOP budget")
    if not np.all(np.isfinite(f)) or np.any(f <= 0):
        raise UserError("FLOPs must be positive and finite")
    if rel_tol < 0:
        raise UserError(f"rel_tol must be >= 0, got {rel_tol}")
    order = np.argsort(f, kind="stable")
    ids = np.empty(len(f), dtype=int)
    gid, anchor = -1, -np.inf
    for i in order:
        if f[i] > anchor * (1 + rel_tol):
            gid, anchor = gid + 1, f[i]
        ids[i] = gid
    return ids


def _power_law(C: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(exponent, coefficient) of y = coef * C^exponent by least squares in log-log."""
    slope, icpt = np.polyfit(np.log(C), np.log(y), 1)
    return float(slope), float(np.exp(icpt))


def fit_approach2(N, D, L, flops=None) -> IsoFlopFit:
    """Fit a parabola in log N to each isoFLOP profile, take its vertex, and fit power laws through the
    vertices.

    D_opt comes from the profile's own (log N, log D) line at the vertex, so it stays right when `flops` is
    not exactly 6 N D (e.g. FLOPs counted with attention).
    """
    N, D, L = (np.asarray(x, dtype=float).ravel() for x in (N, D, L))
    if not len(N) == len(D) == len(L):
        raise UserError(f"N, D and L differ in length: {len(N)}, {len(D)}, {len(L)}")
    for name, x in (("N (params)", N), ("D (tokens)", D), ("L (loss)", L)):
        if not np.all(np.isfinite(x)) or np.any(x <= 0):
            raise UserError(f"{name} must be positive and finite")
    C = 6.0 * N * D if flops is None else np.asarray(flops, dtype=float).ravel()
    if len(C) != len(N):
        raise UserError(f"flops has {len(C)} values for {len(N)} points")
    groups = group_by_budget(C)
    budgets, n_opt, d_opt, loss_opt, parabolas = [], [], [], [], []
    for g in range(groups.max() + 1):
        m = groups == g
        budget = float(np.exp(np.mean(np.log(C[m]))))
        x = np.log(N[m])
        if len(np.unique(N[m])) < 3:
            raise UserError(
                f"the isoFLOP profile at {budget:.3g} FLOPs has {len(np.unique(N[m]))} distinct model sizes; "
                "approach 2 needs >= 3 per budget"
            )
        coef = np.polyfit(x, L[m], 2)
        if not coef[0] > 0:
            raise UserError(
                f"the isoFLOP profile at {budget:.3g} FLOPs has no minimum (its parabola in log N opens "
                "downward); add model sizes on both sides of the best one"
            )
        xv = -coef[1] / (2 * coef[0])
        line = np.polyfit(x, np.log(D[m]), 1)
        budgets.append(budget)
        n_opt.append(float(np.exp(xv)))
        d_opt.append(float(np.exp(np.polyval(line, xv))))
        loss_opt.append(float(np.polyval(coef, xv)))
        parabolas.append([float(c) for c in coef])
    if len(budgets) < 2:
        raise UserError(f"approach 2 needs >= 2 FLOP budgets, got {len(budgets)}")
    a, n_coef = _power_law(np.array(budgets), np.array(n_opt))
    b, d_coef = _power_law(np.array(budgets), np.array(d_opt))
    return IsoFlopFit(budgets, n_opt, d_opt, loss_opt, parabolas, a, b, n_coef, d_coef)
