"""Chinchilla approach 2 (llmctl.scaling.isoflop): isoFLOP grouping, per-budget parabola vertices, the power
laws through them, and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from llmctl.core.errors import UserError
from llmctl.scaling.isoflop import IsoFlopFit, fit_approach2, group_by_budget

ALPHA, BETA = 0.34, 0.28
A_TRUE, B_TRUE = BETA / (ALPHA + BETA), ALPHA / (ALPHA + BETA)


def law(N, D):
    return 1.69 + 406.4 / N**ALPHA + 410.7 / D**BETA


def n_opt(C):
    G = (ALPHA * 406.4 / (BETA * 410.7)) ** (1 / (ALPHA + BETA))
    return G * (C / 6) ** A_TRUE


def isoflop_grid(noise: float, seed: int = 0, budgets: int = 5, sizes: int = 5):
    """5 budgets 1e18..1e20, 5 model sizes per budget from 1/10 to 10x the optimum, D = C/(6N)."""
    C = np.geomspace(1e18, 1e20, budgets)
    N = (n_opt(C)[:, None] * np.geomspace(0.1, 10.0, sizes)[None]).ravel()
    D = np.repeat(C, sizes) / (6 * N)
    L = law(N, D) * (1 + noise * np.random.default_rng(seed).standard_normal(N.size))
    return N, D, L


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_one_percent_noise_grid_gives_the_analytic_exponents_within_005(seed):
    N, D, L = isoflop_grid(0.01, seed=seed)
    fit = fit_approach2(N, D, L)
    assert len(fit.budgets) == 5 and len(fit.parabolas) == 5
    assert fit.a == pytest.approx(A_TRUE, abs=0.05)
    assert fit.b == pytest.approx(B_TRUE, abs=0.05)


def test_noise_free_grid_vertices_sit_at_the_true_optima():
    N, D, L = isoflop_grid(0.0, sizes=9)
    fit = fit_approach2(N, D, L)
    # a profile is not exactly a parabola in log N, so the vertex is close, not exact
    np.testing.assert_allclose(np.log(fit.n_opt), np.log(n_opt(np.array(fit.budgets))), atol=0.1)
    np.testing.assert_allclose(np.array(fit.n_opt) * np.array(fit.d_opt) * 6, fit.budgets, rtol=1e-9)
    assert fit.a == pytest.approx(A_TRUE, abs=0.01) and fit.b == pytest.approx(B_TRUE, abs=0.01)
    assert fit.a + fit.b == pytest.approx(1.0, abs=1e-9)  # D = C/(6N) on every profile
    n, d = fit.optimal(1e22)
    assert n == pytest.approx(fit.n_coef * 1e22**fit.a) and d == pytest.approx(fit.d_coef * 1e22**fit.b)
    assert np.log(n) == pytest.approx(np.log(n_opt(1e22)), abs=0.15)


def test_an_exact_parabola_has_its_vertex_recovered_exactly():
    budgets = [1e18, 1e19, 1e20]
    x0 = {1e18: np.log(3e7), 1e19: np.log(9e7), 1e20: np.log(2.7e8)}  # exponent log(3)/log(10)
    N, D, L = [], [], []
    for C in budgets:
        for dx in (-1.0, -0.4, 0.0, 0.5, 1.2):
            n = np.exp(x0[C] + dx)
            N.append(n)
            D.append(C / (6 * n))
            L.append(2.0 + 0.05 * dx**2 + 0.01 * np.log10(C))
    fit = fit_approach2(N, D, L)
    np.testing.assert_allclose(np.log(fit.n_opt), [x0[C] for C in budgets], atol=1e-8)
    np.testing.assert_allclose(fit.loss_opt, [2.0 + 0.01 * np.log10(C) for C in budgets], atol=1e-10)
    np.testing.assert_allclose([p[0] for p in fit.parabolas], 0.05, rtol=1e-8)
    assert fit.a == pytest.approx(np.log(3) / np.log(10), abs=1e-8)


def test_flops_given_explicitly_and_d_opt_follows_the_profile():
    N, D, L = isoflop_grid(0.0)
    flops = 6 * N * D * 1.3  # e.g. counted with attention: D_opt must not be C/(6 N_opt)
    fit = fit_approach2(N, D, L, flops=flops)
    ref = fit_approach2(N, D, L)
    np.testing.assert_allclose(fit.budgets, np.array(ref.budgets) * 1.3, rtol=1e-9)
    np.testing.assert_allclose(fit.d_opt, ref.d_opt, rtol=1e-9)
    assert fit.a == pytest.approx(ref.a, abs=1e-9)


def test_group_by_budget_tolerates_rounding_and_does_not_chain():
    f = np.array([1e18, 1.03e18, 0.99e19, 1e19, 1.01e19, 1e18 * 1.001])
    assert group_by_budget(f).tolist() == [0, 0, 1, 1, 1, 0]
    chain = 1e18 * 1.04 ** np.arange(6)  # each 4% above the last: 0-4% and so on, not one group
    ids = group_by_budget(chain)
    assert ids.tolist() == [0, 0, 1, 1, 2, 2]
    assert group_by_budget(f, rel_tol=0.0).tolist() == [0, 2, 3, 4, 5, 1]
    for bad in ([], [1e18, 0.0], [1e18, -1.0], [np.nan]):
        with pytest.raises(UserError):
            group_by_budget(bad)


def test_round_trip_through_json():
    fit = fit_approach2(*isoflop_grid(0.01, seed=2))
    back = IsoFlopFit.from_dict(json.loads(json.dumps(fit.to_dict())))
    assert back == fit
    with pytest.raises(UserError, match="budget"):
        IsoFlopFit.from_dict({**fit.to_dict(), "budget": [1.0]})


def test_bad_input_is_a_user_error():
    N, D, L = isoflop_grid(0.01)
    one = slice(0, 5)
    with pytest.raises(UserError, match=">= 2 FLOP budgets"):
        fit_approach2(N[one], D[one], L[one])
    keep = np.r_[0:5, 5:7]  # second budget with only 2 model sizes
    with pytest.raises(UserError, match="2 distinct model sizes"):
        fit_approach2(N[keep], D[keep], L[keep])
    Ld = L.copy()
    Ld[5:10] = 3.0 - 0.01 * (np.log(N[5:10]) - np.log(N[7])) ** 2  # a maximum, not a minimum
    with pytest.raises(UserError, match=r"at 3\.16e\+18 FLOPs has no minimum"):
        fit_approach2(N, D, Ld)
    for i, name in enumerate(("N", "D", "L")):
        bad = [N.copy(), D.copy(), L.copy()]
        bad[i][0] = -1.0
        with pytest.raises(UserError, match=name):
            fit_approach2(*bad)
    with pytest.raises(UserError, match="differ in length"):
        fit_approach2(N, D[:-1], L)
    with pytest.raises(UserError, match="flops"):
        fit_approach2(N, D, L, flops=[1e18])
