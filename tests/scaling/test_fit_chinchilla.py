"""Chinchilla approach 3 (llmctl.scaling.chinchilla): the objective against scipy's Huber and log-sum-exp,
recovery of a known law, the two traps (sum vs mean, bootstrap refits to convergence) and bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.optimize import approx_fprime, minimize, minimize_scalar
from scipy.special import huber, logsumexp

from llmctl.core.errors import UserError
from llmctl.scaling.chinchilla import (
    HUBER_DELTA,
    PARAMS,
    LawFit,
    bootstrap,
    fit_approach3,
    grad_tolerance,
    grid_starts,
    grid_objective,
    intervals,
    objective,
    resample_weights,
    residuals,
)

TRUE = {"E": 1.69, "A": 406.4, "B": 410.7, "alpha": 0.34, "beta": 0.28}
TRUE_THETA = np.array([np.log(1.69), np.log(406.4), np.log(410.7), 0.34, 0.28])


def true_law() -> LawFit:
    return LawFit(**TRUE, objective=0.0, grad_norm=0.0, converged=True, n_points=0)


def isoflop_grid(noise: float, seed: int = 0, budgets: int = 5, sizes: int = 5):
    """5 budgets over 2 decades (1e18..1e20), 5 model sizes per budget from 1/10 to 10x the optimum,
    D = C/(6N); loss = law * (1 + noise * gaussian)."""
    C = np.geomspace(1e18, 1e20, budgets)
    n_opt, _ = true_law().optimal(C)
    N = (n_opt[:, None] * np.geomspace(0.1, 10.0, sizes)[None]).ravel()
    D = np.repeat(C, sizes) / (6 * N)
    L = true_law().loss(N, D) * (1 + noise * np.random.default_rng(seed).standard_normal(N.size))
    return N, D, L


def theta_of(fit_or_row) -> np.ndarray:
    v = [fit_or_row[k] if isinstance(fit_or_row, dict) else getattr(fit_or_row, k) for k in PARAMS]
    return np.array([np.log(v[0]), np.log(v[1]), np.log(v[2]), v[3], v[4]])


def logs(N, D, L):
    return np.log(N), np.log(D), np.log(L)


# --- the objective ------------------------------------------------------------------------------------------


def test_objective_is_the_sum_of_scipy_huber_terms_and_its_gradient_is_exact():
    N, D, L = isoflop_grid(0.01, seed=3)
    x, y, z = logs(N, D, L)
    rng = np.random.default_rng(0)
    for delta in (HUBER_DELTA, 0.05):
        for theta in (TRUE_THETA, TRUE_THETA + rng.normal(0, 0.05, 5)):
            pred = logsumexp(
                np.stack([theta[1] - theta[3] * x, theta[2] - theta[4] * y, np.full_like(x, theta[0])]),
                axis=0,
            )
            want = huber(delta, pred - z).sum()
            f, g = objective(theta, x, y, z, delta)
            assert f == pytest.approx(want, rel=1e-12)
            fd = approx_fprime(theta, lambda t, d=delta: objective(t, x, y, z, d)[0], 1e-8)
            np.testing.assert_allclose(g, fd, rtol=1e-4, atol=1e-7 * np.abs(fd).max())
    # multiplicities are repeated points
    w = rng.integers(0, 4, size=len(x)).astype(float)
    rep = np.repeat(np.arange(len(x)), w.astype(int))
    fw, gw = objective(TRUE_THETA + 0.01, x, y, z, weights=w)
    fr, gr = objective(TRUE_THETA + 0.01, x[rep], y[rep], z[rep])
    assert fw == pytest.approx(fr, rel=1e-12)
    np.testing.assert_allclose(gw, gr, rtol=1e-10)


def test_grid_objective_matches_pointwise_objective():
    N, D, L = isoflop_grid(0.01)
    x, y, z = logs(N, D, L)
    thetas = np.random.default_rng(1).uniform([-1, 0, 0, 0, 0], [1, 25, 25, 2, 2], size=(300, 5))
    w = np.random.default_rng(2).integers(0, 3, size=len(x)).astype(float)
    np.testing.assert_allclose(
        grid_objective(thetas, x, y, z, weights=w),
        [objective(t, x, y, z, weights=w)[0] for t in thetas],
        rtol=1e-10,
    )


# --- recovery of a known law --------------------------------------------------------------------------------


def test_noise_free_grid_recovers_all_five_parameters():
    N, D, L = isoflop_grid(0.0)
    fit = fit_approach3(N, D, L)
    for k, v in TRUE.items():
        assert getattr(fit, k) == pytest.approx(v, rel=1e-4), k
    assert fit.converged and fit.grad_norm < 1e-9
    assert fit.objective < 1e-15 and fit.n_points == 25 and fit.huber_delta == HUBER_DELTA


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_low_noise_grid_recovers_exponents_within_002_and_E_within_2pct(seed):
    # 0.1% noise: at 1% noise 25 points cannot pin E to 2% (next test), so the tolerance test runs here.
    N, D, L = isoflop_grid(0.001, seed=seed)
    fit = fit_approach3(N, D, L)
    assert fit.converged
    assert abs(fit.alpha - 0.34) < 0.02 and abs(fit.beta - 0.28) < 0.02
    assert fit.E == pytest.approx(1.69, rel=0.02)
    a, b = fit.exponents()
    assert a == pytest.approx(0.28 / 0.62, abs=0.01) and b == pytest.approx(0.34 / 0.62, abs=0.01)


def wide_isoflop_grid(noise: float, seed: int):
    """The issue's 5x5 isoFLOP grid laid out as a sweep should be: budgets over 7 decades (1e17..1e24) and
    sizes from 1/30x to 30x each budget's optimum, which pins E against A/N^alpha."""
    C = np.geomspace(1e17, 1e24, 5)
    n_opt, _ = true_law().optimal(C)
    N = (n_opt[:, None] * np.geomspace(1 / 30, 30, 5)[None]).ravel()
    D = np.repeat(C, 5) / (6 * N)
    L = true_law().loss(N, D) * (1 + noise * np.random.default_rng(seed).standard_normal(N.size))
    return N, D, L, np.repeat(C, 5)


@pytest.mark.parametrize("seed", range(10))
def test_one_percent_noise_wide_grid_meets_the_issue_tolerances(seed):
    """The must-show: 1% noise on a 5x5 isoFLOP grid -> approach 3 recovers alpha, beta within 0.02 and E within
    2%, approach 2's exponents match beta/(alpha+beta), alpha/(alpha+beta) within 0.05 (40 seeds checked while
    writing this: worst 0.016 / 0.014 / 2.0% / 0.021). On a 2-decade grid the spread of E is ~5% (the test
    above), so a sweep that is to pin E needs the wide one."""
    from llmctl.scaling.isoflop import fit_approach2

    N, D, L, C = wide_isoflop_grid(0.01, seed)
    fit = fit_approach3(N, D, L)
    assert fit.converged
    assert abs(fit.alpha - TRUE["alpha"]) < 0.02 and abs(fit.beta - TRUE["beta"]) < 0.02
    assert abs(fit.E / TRUE["E"] - 1) < 0.02
    iso = fit_approach2(N, D, L, flops=C)
    a, b = TRUE["beta"] / (TRUE["alpha"] + TRUE["beta"]), TRUE["alpha"] / (TRUE["alpha"] + TRUE["beta"])
    assert abs(iso.a - a) < 0.05 and abs(iso.b - b) < 0.05


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 5])
def test_one_percent_noise_grid_fit_is_converged_and_beats_the_truth(seed):
    # At 1% noise the estimator's own spread on 25 points (seeds 0-15: sd ~0.012 in alpha, ~0.015 in beta, ~5%
    # in E) sets the tolerance; what must hold exactly is that the optimiser found a minimum at least as low
    # as the true parameters' (a stalled or local answer would not) with a tight gradient.
    N, D, L = isoflop_grid(0.01, seed=seed)
    fit = fit_approach3(N, D, L)
    x, y, z = logs(N, D, L)
    assert fit.converged and fit.grad_norm <= grad_tolerance(x, y)
    assert fit.objective <= objective(TRUE_THETA, x, y, z)[0]
    assert fit.objective == pytest.approx(objective(theta_of(fit), x, y, z)[0], rel=1e-12)
    assert abs(fit.alpha - 0.34) < 0.05 and abs(fit.beta - 0.28) < 0.05
    assert fit.E == pytest.approx(1.69, rel=0.2)


def test_starts_override_and_a_far_start_still_reaches_the_same_optimum():
    N, D, L = isoflop_grid(0.01, seed=1)
    ref = fit_approach3(N, D, L)
    far = fit_approach3(N, D, L, starts=[[3.0, 50.0, 5000.0, 0.9, 0.1]])
    assert far.converged and far.objective == pytest.approx(ref.objective, rel=1e-9)
    assert far.alpha == pytest.approx(ref.alpha, abs=1e-6)


# --- trap 1: the objective is a sum -------------------------------------------------------------------------


def test_objective_scales_with_the_points_so_duplicated_data_doubles_it():
    # A mean would be unchanged by duplicating every point; the sum doubles, and the optimum stays put.
    N, D, L = isoflop_grid(0.01, seed=2)
    one = fit_approach3(N, D, L)
    two = fit_approach3(np.tile(N, 2), np.tile(D, 2), np.tile(L, 2))
    assert two.objective == pytest.approx(2 * one.objective, rel=1e-8)
    assert two.alpha == pytest.approx(one.alpha, abs=1e-6) and two.E == pytest.approx(one.E, rel=1e-6)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mean_scaled_objective_stops_early_under_scipy_defaults(seed):
    # The same objective divided by n, from the same (best grid) start, minimised by scipy's L-BFGS-B with its
    # default tolerances: gtol and ftol are absolute at this scale, so it stops with a worse objective and a
    # gradient many orders above ours.
    N, D, L = isoflop_grid(0.01, seed=seed)
    x, y, z = logs(N, D, L)
    n = len(x)
    fit = fit_approach3(N, D, L)
    grid = grid_starts()
    start = grid[np.argmin(grid_objective(grid, x, y, z))]
    mx, my = x.mean(), y.mean()  # in our centred coordinates, so the only difference is the scale

    def centred(t, k):
        f, g = objective(t, x - mx, y - my, z)
        return k * f, k * g

    c0 = np.array([start[0], start[1] - start[3] * mx, start[2] - start[4] * my, start[3], start[4]])
    ends = {}
    for name, k in (("mean", 1.0 / n), ("sum", 1.0)):
        res = minimize(centred, c0, args=(k,), jac=True, method="L-BFGS-B")
        t = res.x + np.array([0, res.x[3] * mx, res.x[4] * my, 0, 0])
        ends[name] = (t, *objective(t, x, y, z))
    tol = grad_tolerance(x, y)
    assert fit.grad_norm <= tol
    t, f_mean, g_mean = ends["mean"]
    assert np.linalg.norm(g_mean) > 100 * tol
    assert f_mean > fit.objective * (1 + 1e-4)
    assert abs(t[3] - fit.alpha) > 5e-4
    # the same run on the sum gets much closer (scipy's defaults are still not enough in general: on some
    # seeds the sum stops ~1e-4 short too, which is why fit_approach3 sets its own tolerances)
    assert ends["sum"][1] < fit.objective * (1 + 1e-5)


# --- trap 2: bootstrap refits to convergence ----------------------------------------------------------------


def test_bootstrap_refits_every_resample_to_convergence():
    N, D, L = isoflop_grid(0.01, seed=0)
    x, y, z = logs(N, D, L)
    seen = []
    samples = bootstrap(N, D, L, n=40, seed=7, progress=seen.append)
    assert seen == list(range(40)) and set(samples) == set(PARAMS)
    assert all(v.shape == (40,) for v in samples.values())
    W = resample_weights(len(x), 40, seed=7)
    for i, w in enumerate(W):
        theta = theta_of({k: samples[k][i] for k in PARAMS})
        g = np.linalg.norm(objective(theta, x, y, z, weights=w)[1])
        assert g <= grad_tolerance(x, y, w) < 2e-7, i
    # and each is the resample's optimum: a fresh multi-start fit of the repeated points is no lower
    for i in range(0, 40, 10):
        rep = np.repeat(np.arange(len(x)), W[i].astype(int))
        fresh = fit_approach3(N[rep], D[rep], L[rep])
        ours = objective(theta_of({k: samples[k][i] for k in PARAMS}), x, y, z, weights=W[i])[0]
        assert ours <= fresh.objective * (1 + 1e-9)
    assert bootstrap(N, D, L, n=40, seed=7)["alpha"].tolist() == samples["alpha"].tolist()


def test_bootstrap_intervals_are_much_wider_than_a_lazy_warm_start():
    # The lazy variant: each resample warm-started at the full-data optimum and stopped at scipy's default
    # tolerances. It barely moves, so its intervals collapse onto the full fit.
    N, D, L = isoflop_grid(0.01, seed=1)
    x, y, z = logs(N, D, L)
    fit = fit_approach3(N, D, L)
    samples = bootstrap(N, D, L, n=60, seed=1, full_fit=fit)
    lazy = [
        minimize(objective, theta_of(fit), args=(x, y, z, HUBER_DELTA, w), jac=True, method="L-BFGS-B").x[3]
        for w in resample_weights(len(x), 60, seed=1)
    ]
    ours, lz = intervals(samples)["alpha"], intervals({"alpha": np.array(lazy)})["alpha"]
    assert ours[1] - ours[0] > 5 * (lz[1] - lz[0])
    assert ours[0] < fit.alpha < ours[1]


@pytest.mark.slow
def test_bootstrap_80pct_interval_covers_the_true_alpha_60_to_95pct_of_the_time():
    # Smaller than benchmarks/scaling_bootstrap_coverage.py (30 draws x 200): 20 draws x 100 resamples.
    hits = 0
    for d in range(20):
        N, D, L = isoflop_grid(0.01, seed=1000 + d)
        lo, hi = intervals(bootstrap(N, D, L, n=100, seed=d))["alpha"]
        hits += lo <= 0.34 <= hi
    assert 12 <= hits <= 19, hits


# --- LawFit -------------------------------------------------------------------------------------------------


def test_optimal_is_the_minimum_of_the_law_on_the_compute_constraint():
    law = true_law()
    for C in (1e19, 1e22, 1e25):
        N, D = law.optimal(C)
        assert 6 * N * D == pytest.approx(C, rel=1e-12)
        best = minimize_scalar(
            lambda u, C=C: law.loss(np.exp(u), C / (6 * np.exp(u))),
            bounds=(5, 40),
            method="bounded",
            options={"xatol": 1e-10},
        )
        assert np.log(N) == pytest.approx(best.x, abs=1e-4)
    a, b = law.exponents()
    assert a + b == pytest.approx(1.0)
    N1, D1 = law.optimal(1e20)
    N2, D2 = law.optimal(1e22)
    assert np.log(N2 / N1) / np.log(100) == pytest.approx(a) and np.log(D2 / D1) / np.log(
        100
    ) == pytest.approx(b)
    np.testing.assert_allclose(
        law.loss([1e9, 1e10], 2e10),
        [1.69 + 406.4 / 1e9**0.34 + 410.7 / 2e10**0.28, 1.69 + 406.4 / 1e10**0.34 + 410.7 / 2e10**0.28],
    )


def test_law_fit_round_trips_through_json_and_residuals_are_log_ratios():
    N, D, L = isoflop_grid(0.01, seed=4)
    fit = fit_approach3(N, D, L)
    back = LawFit.from_dict(json.loads(json.dumps(fit.to_dict())))
    assert back == fit
    np.testing.assert_allclose(residuals(fit, N, D, L), np.log(L) - np.log(fit.loss(N, D)))
    with pytest.raises(UserError, match="alhpa"):
        LawFit.from_dict({**fit.to_dict(), "alhpa": 1.0})


def test_intervals_are_percentiles():
    s = {"alpha": np.arange(101.0)}
    assert intervals(s)["alpha"] == pytest.approx((10.0, 90.0))
    assert intervals(s, level=0.5)["alpha"] == pytest.approx((25.0, 75.0))
    with pytest.raises(UserError):
        intervals(s, level=1.5)


# --- bad input ----------------------------------------------------------------------------------------------


def test_bad_input_is_a_user_error():
    N, D, L = isoflop_grid(0.01)
    with pytest.raises(UserError, match="needs more points"):
        fit_approach3(N[:5], D[:5], L[:5])
    with pytest.raises(UserError, match="needs more points"):
        bootstrap(N[:3], D[:3], L[:3], n=2)
    for i, name in enumerate(("N", "D", "L")):
        bad = [N.copy(), D.copy(), L.copy()]
        bad[i][3] = 0.0
        with pytest.raises(UserError, match=name):
            fit_approach3(*bad)
        bad[i][3] = -1.0
        with pytest.raises(UserError, match=name):
            fit_approach3(*bad)
        bad[i][3] = np.nan
        with pytest.raises(UserError, match=name):
            fit_approach3(*bad)
    with pytest.raises(UserError, match="differ in length"):
        fit_approach3(N, D[:-1], L)
    with pytest.raises(UserError, match="starts"):
        fit_approach3(N, D, L, starts=[[1.0, 2.0, 3.0]])
    with pytest.raises(UserError, match="resamples"):
        bootstrap(N, D, L, n=0)
