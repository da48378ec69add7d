"""Loss -> benchmark sigmoid (llmctl.scaling.benchmark_fit) and compute-optimal hyperparameter power laws
(llmctl.scaling.hparams)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.special import expit

from llmctl.core.errors import UserError
from llmctl.scaling.benchmark_fit import BenchmarkFit, fit_benchmark, predict_accuracy
from llmctl.scaling.hparams import PowerLaw, best_per_budget, fit_power_law

SIG = {"floor": 0.25, "ceiling": 0.85, "k": 5.0, "l0": 2.5}


def true_acc(loss):
    return SIG["floor"] + (SIG["ceiling"] - SIG["floor"]) * expit(-SIG["k"] * (np.asarray(loss) - SIG["l0"]))


def noisy_points(n=16, lo=1.8, hi=3.6, noise=0.01, seed=0):
    loss = np.linspace(lo, hi, n)
    return loss, true_acc(loss) + noise * np.random.default_rng(seed).standard_normal(n)


# --- benchmark_fit ------------------------------------------------------------------------------------------


def test_accuracy_is_the_scipy_expit_sigmoid():
    fit = BenchmarkFit("mmlu", 0.25, 0.85, 5.0, 2.5, n_points=0, rmse=0.0)
    loss = np.linspace(-50, 50, 101)  # steep ends must not overflow
    np.testing.assert_allclose(fit.accuracy(loss), true_acc(loss), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fit_with_floor_at_chance_recovers_the_sigmoid(seed):
    loss, acc = noisy_points(seed=seed)
    fit = fit_benchmark("mmlu", loss, acc, chance=0.25, bootstrap=50, seed=seed)
    assert fit.floor == 0.25 and fit.n_points == 16
    assert fit.ceiling == pytest.approx(0.85, abs=0.03)
    assert fit.k == pytest.approx(5.0, rel=0.2)
    assert fit.l0 == pytest.approx(2.5, abs=0.05)
    assert 0.005 < fit.rmse < 0.015
    assert set(fit.samples) == {"floor", "ceiling", "k", "l0"} and len(fit.samples["k"]) == 50
    assert set(fit.samples["floor"]) == {0.25}
    assert max(fit.samples["ceiling"]) <= 1.0


def test_fit_with_a_fitted_floor_recovers_it():
    loss, acc = noisy_points(n=30, lo=1.6, hi=4.2, seed=4)
    fit = fit_benchmark("arc", loss, acc, bootstrap=0)
    assert fit.samples is None
    assert fit.floor == pytest.approx(0.25, abs=0.03)
    assert fit.ceiling == pytest.approx(0.85, abs=0.03)
    assert fit.l0 == pytest.approx(2.5, abs=0.08)


def test_ceiling_is_bounded_by_one():
    loss = np.linspace(1.0, 3.0, 12)
    acc = np.clip(0.25 + 0.8 * expit(-4 * (loss - 2.2)) + 0.02, 0, 1)  # would like a ceiling above 1
    fit = fit_benchmark("easy", loss, acc, chance=0.25, bootstrap=20)
    assert fit.ceiling <= 1.0 and max(fit.samples["ceiling"]) <= 1.0


def test_predict_accuracy_intervals_contain_the_truth_and_grow_with_loss_uncertainty():
    loss, acc = noisy_points(seed=5)
    fit = fit_benchmark("mmlu", loss, acc, chance=0.25, bootstrap=200, seed=1)
    rng = np.random.default_rng(3)
    for L in (2.2, 2.5, 2.8, 3.2):
        med, lo, hi = predict_accuracy(fit, L + 0.03 * rng.standard_normal(1000))
        assert lo < true_acc(L) < hi, L
        assert lo < med < hi
        _, lo0, hi0 = predict_accuracy(fit, L)  # the fit's own uncertainty only
        assert hi - lo > hi0 - lo0
    point = BenchmarkFit("mmlu", 0.25, 0.85, 5.0, 2.5, n_points=16, rmse=0.01)
    assert predict_accuracy(point, [2.5, 2.5]) == pytest.approx((0.55, 0.55, 0.55))


def test_benchmark_fit_round_trips_through_json():
    fit = fit_benchmark("mmlu", *noisy_points(), chance=0.25, bootstrap=10)
    back = BenchmarkFit.from_dict(json.loads(json.dumps(fit.to_dict())))
    assert back == fit
    with pytest.raises(UserError, match="ceilng"):
        BenchmarkFit.from_dict({**fit.to_dict(), "ceilng": 1.0})


def test_benchmark_bad_input_is_a_user_error():
    loss, acc = noisy_points()
    with pytest.raises(UserError, match=">= 3 points"):
        fit_benchmark("m", loss[:2], acc[:2], chance=0.25)
    with pytest.raises(UserError, match=">= 4 points"):
        fit_benchmark("m", loss[:3], acc[:3])
    fit_benchmark("m", loss[:3], acc[:3], chance=0.25, bootstrap=0)  # enough with the floor fixed
    with pytest.raises(UserError, match=r"\[0, 1\]"):
        fit_benchmark("m", loss, acc * 100, chance=0.25)
    with pytest.raises(UserError, match="differ|accuracies"):
        fit_benchmark("m", loss, acc[:-1], chance=0.25)
    with pytest.raises(UserError, match="chance"):
        fit_benchmark("m", loss, acc, chance=1.5)
    with pytest.raises(UserError, match="finite"):
        fit_benchmark("m", np.r_[loss[:-1], np.nan], acc, chance=0.25)
    fit = fit_benchmark("m", loss, acc, chance=0.25, bootstrap=0)
    with pytest.raises(UserError, match="loss samples"):
        predict_accuracy(fit, [np.nan])


# --- hparams ------------------------------------------------------------------------------------------------


def lr_grid(noise: float, seed: int = 0):
    """5 budgets 1e17..1e20; at each an lr sweep in factors of 2 on a fixed absolute grid (so the optimum
    falls between steps); loss a parabola in log lr around lr_opt = 0.3 C^-0.125."""
    rng = np.random.default_rng(seed)
    C, lr, loss = [], [], []
    sweep = 2.0 ** np.arange(-14, -6)  # 6e-5 .. 8e-3
    for c in np.geomspace(1e17, 1e20, 5):
        opt = 0.3 * c**-0.125
        for v in sweep:
            C.append(c * (1 + 0.01 * rng.uniform()))  # budgets land a little apart
            lr.append(v)
            loss.append(3.0 - 0.1 * np.log10(c) + 0.04 * np.log(v / opt) ** 2 + noise * rng.standard_normal())
    return np.array(C), np.array(lr), np.array(loss)


def test_noise_free_sweep_recovers_the_exponent_exactly_through_vertices():
    C, lr, loss = lr_grid(0.0)
    budgets, best = best_per_budget(C, lr, loss)
    assert len(budgets) == 5
    np.testing.assert_allclose(best, 0.3 * budgets**-0.125, rtol=0.01)
    law = fit_power_law(budgets, best)
    assert law.exponent == pytest.approx(-0.125, abs=2e-3) and law.coef == pytest.approx(0.3, rel=0.1)
    # the best run alone (a factor-2 sweep) is off by up to sqrt(2) per budget
    argmin = [lr[(abs(C / b - 1) < 0.05)][np.argmin(loss[(abs(C / b - 1) < 0.05)])] for b in budgets]
    assert np.max(np.abs(np.log(np.array(argmin) / (0.3 * budgets**-0.125)))) > 0.1


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_noisy_sweep_recovers_the_exponent(seed):
    C, lr, loss = lr_grid(0.003, seed=seed)
    law = fit_power_law(*best_per_budget(C, lr, loss))
    assert law.exponent == pytest.approx(-0.125, abs=0.02)
    assert law.n_points == 5
    assert law(1e24) == pytest.approx(0.3 * 1e24**-0.125, rel=0.3)


def test_best_per_budget_falls_back_to_the_best_run():
    C = np.full(6, 1e18)
    # minimum at the edge of the sweep: no bracket, the edge value is returned
    edge = best_per_budget(C, [1e-3, 2e-3, 4e-3, 8e-3, 1.6e-2, 3.2e-2], [2.0, 2.1, 2.2, 2.3, 2.4, 2.5])
    assert edge[1].tolist() == [1e-3]
    # two distinct values only
    two = best_per_budget(C[:4], [1e-3, 1e-3, 2e-3, 2e-3], [2.2, 2.1, 2.0, 2.05])
    assert two[1].tolist() == [2e-3]
    # repeated runs at one value are fitted together; the vertex lies between the best value's neighbours
    b = best_per_budget(C, [1e-3, 2e-3, 2e-3, 4e-3, 4e-3, 8e-3], [2.3, 2.1, 2.12, 2.05, 2.07, 2.2])
    assert 2e-3 < b[1][0] < 8e-3


def test_power_law_round_trip_and_bad_input():
    law = fit_power_law([1e18, 1e19, 1e20], [1e-3, 8e-4, 6.4e-4])
    assert law(1e19) == pytest.approx(8e-4, rel=1e-2)
    assert PowerLaw.from_dict(json.loads(json.dumps(law.to_dict()))) == law
    with pytest.raises(UserError, match=">= 2 distinct budgets"):
        fit_power_law([1e18, 1e18], [1e-3, 2e-3])
    with pytest.raises(UserError, match="positive"):
        fit_power_law([1e18, 1e19], [1e-3, -2e-3])
    with pytest.raises(UserError, match="differ in length"):
        best_per_budget([1e18, 1e18], [1e-3], [2.0, 2.1])
    with pytest.raises(UserError, match="non-finite"):
        best_per_budget([1e18] * 3, [1e-3, 2e-3, 4e-3], [2.0, np.inf, 2.1])
