"""`llmctl scaling fit`: every fit the runs allow, assembled into fit.json (the contract `predict` reads).

The law is fitted to the best run of each (N, D) — an LR or batch sweep's other points describe the optimiser,
not the model. Approach 3 (Chinchilla's L(N, D), with bootstrap intervals) and approach 2 (isoFLOP parabolas)
are both computed when the data allows, `method` says which one `predict` uses and which one must succeed; the
LR / batch power laws come from runs that vary them within a budget, and each benchmark is a sigmoid of loss.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from llmctl.core.errors import UserError

from .benchmark_fit import fit_benchmark
from .chinchilla import PARAMS, at_bound, bootstrap as bootstrap_law, fit_approach3, intervals, residuals
from .hparams import best_per_budget, fit_power_law
from .isoflop import fit_approach2
from .predict import FIT_VERSION, LEVEL
from .runs import Runs, best_per_shape

METHODS = ("approach3", "approach2")
LAWS = ("chinchilla",)
CHANCE = {"mmlu": 0.25, "cmmlu": 0.25, "ceval": 0.25}  # four-choice benchmarks: the floor of the sigmoid


def fit_runs(runs: Runs, *, method: str = "approach3", law: str = "chinchilla", n_bootstrap: int = 1000,
             seed: int = 0, benchmarks: tuple[str, ...] = (), params_kind: str | None = None,
             flops_model: str | None = None, progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    if method not in METHODS:
        raise UserError(f"--method must be one of {', '.join(METHODS)}, got {method}")
    if law not in LAWS:
        raise UserError(f"--law must be one of {', '.join(LAWS)}, got {law}")
    if n_bootstrap < 0:
        raise UserError(f"--bootstrap must be >= 0, got {n_bootstrap}")
    law_runs = runs.select(best_per_shape(runs))
    n, d, loss, groups = law_runs.params, law_runs.tokens, law_runs.loss, law_runs.groups()
    doc: dict[str, Any] = {"llmctl_scaling_fit": FIT_VERSION, "source": runs.source, "law": law, "method": method,
                           "params_kind": params_kind, "flops_model": flops_model, "level": LEVEL,
                           "n_runs": len(runs), "n_law_points": len(law_runs), "skipped_failed": runs.skipped}
    doc["approach3"] = _approach3(n, d, loss, n_bootstrap, seed, progress) if method == "approach3" else None
    try:
        iso = fit_approach2(n, d, loss, flops=groups)
        doc["approach2"] = iso.to_dict()
        doc["approach2_warnings"] = _extrapolated(iso, n, groups)
    except UserError as e:
        if method == "approach2":
            raise
        doc["approach2"] = None
        doc["approach2_skipped"] = str(e)
    doc["benchmarks"] = {}
    for name in benchmarks:
        acc = runs.benchmarks[name]
        have = np.isfinite(acc)
        doc["benchmarks"][name] = fit_benchmark(name, runs.loss[have], acc[have], chance=CHANCE.get(name),
                                                seed=seed).to_dict()
    doc["hparams"] = _hparams(runs)
    doc["data"] = runs.table()
    return doc


def _approach3(n, d, loss, n_bootstrap: int, seed: int, progress) -> dict[str, Any]:
    fit = fit_approach3(n, d, loss)
    out: dict[str, Any] = {"fit": fit.to_dict(), "at_bound": at_bound(fit), "exponents": dict(zip(("a", "b"), fit.exponents())),
                           "residuals": residuals(fit, n, d, loss).tolist()}
    if n_bootstrap:
        samples = bootstrap_law(n, d, loss, n=n_bootstrap, seed=seed, full_fit=fit, progress=progress)
        ab = np.array([(s_b / (s_a + s_b), s_a / (s_a + s_b)) for s_a, s_b in zip(samples["alpha"], samples["beta"])])
        out["intervals"] = {k: list(v) for k, v in intervals(samples, LEVEL).items()}
        out["exponent_intervals"] = {"a": np.quantile(ab[:, 0], [0.1, 0.9]).tolist(),
                                     "b": np.quantile(ab[:, 1], [0.1, 0.9]).tolist()}
        out["bootstrap"] = {"n": n_bootstrap, "seed": seed, "samples": {p: samples[p].tolist() for p in PARAMS}}
    return out


def _extrapolated(iso, n: np.ndarray, groups: np.ndarray) -> list[str]:
    """Profiles whose parabola's minimum lies outside the sizes they sampled: an extrapolation to flag."""
    out = []
    for budget, n_opt in zip(iso.budgets, iso.n_opt):
        sizes = n[np.abs(groups / budget - 1) <= 0.05]
        if len(sizes) and not sizes.min() <= n_opt <= sizes.max():
            out.append(f"the profile at C = {budget:.3g} has its minimum at N = {n_opt:.3g}, outside its sizes "
                       f"[{sizes.min():.3g}, {sizes.max():.3g}]: extrapolated (add sizes towards it)")
    return out


def _hparams(runs: Runs) -> dict[str, Any]:
    """Optimal LR / batch per budget as power laws in C, when the runs vary them within a budget."""
    out = {}
    groups = runs.groups()
    for key in ("lr", "batch"):
        values = getattr(runs, key)
        if values is None:
            continue
        varied = [g for g in set(groups.tolist()) if len(set(values[groups == g].tolist())) >= 2]
        if len(varied) < 2:
            continue
        sel = np.isin(groups, varied)
        budgets, best = best_per_budget(groups[sel], values[sel], runs.loss[sel])
        out[key] = {"law": fit_power_law(budgets, best).to_dict(),
                    "best_per_budget": {f"{c:g}": float(v) for c, v in zip(budgets, best)}}
    return out


def summary(doc: dict[str, Any]) -> str:
    """The table `fit` prints."""
    lines = [f"fit of {doc['n_law_points']} points ({doc['n_runs']} runs) from {doc['source']}"
             + (f", N = {doc['params_kind']} parameters" if doc.get("params_kind") else "")]
    a3 = doc.get("approach3")
    if a3:
        ci = a3.get("intervals") or {}
        lines.append(f"approach 3: L(N, D) = E + A/N^alpha + B/D^beta   ({int(LEVEL * 100)}% bootstrap interval)")
        for p in PARAMS:
            value = a3["fit"][p]
            lo_hi = f"  [{ci[p][0]:.4g}, {ci[p][1]:.4g}]" if p in ci else ""
            lines.append(f"  {p:<6} {value:>12.5g}{lo_hi}")
        ea = a3.get("exponent_intervals") or {}
        for k, what in (("a", "N_opt ∝ C^a"), ("b", "D_opt ∝ C^b")):
            lo_hi = f"  [{ea[k][0]:.3f}, {ea[k][1]:.3f}]" if k in ea else ""
            lines.append(f"  {k:<6} {a3['exponents'][k]:>12.4f}{lo_hi}   {what}")
        res = np.array(a3["residuals"])
        lines.append(f"  residual RMS (log L) {np.sqrt(np.mean(res ** 2)):.4g}, converged {a3['fit']['converged']}")
        for name in a3.get("at_bound") or []:
            lines.append(f"  warning: {name} sits on its bound 0: these runs do not show the loss falling with "
                         f"{'N' if name == 'alpha' else 'D'} (a grid far from compute-optimal?)")
    a2 = doc.get("approach2")
    if a2:
        lines.append(f"approach 2: {len(a2['budgets'])} isoFLOP profiles, N_opt ∝ C^{a2['a']:.4f}, "
                     f"D_opt ∝ C^{a2['b']:.4f}")
        for c, n, dd, lo in zip(a2["budgets"], a2["n_opt"], a2["d_opt"], a2["loss_opt"]):
            lines.append(f"  C {c:>10.4g}: N_opt {n:>10.4g}  D_opt {dd:>10.4g}  loss {lo:.4f}")
        lines += [f"  warning: {w}" for w in doc.get("approach2_warnings") or []]
    elif doc.get("approach2_skipped"):
        lines.append(f"approach 2: not fitted ({doc['approach2_skipped']})")
    for name, b in (doc.get("benchmarks") or {}).items():
        lines.append(f"benchmark {name}: acc = {b['floor']:.3f} + ({b['ceiling']:.3f} - {b['floor']:.3f}) * "
                     f"sigmoid(-{b['k']:.3f} (L - {b['l0']:.3f})), {b['n_points']} runs, RMSE {b['rmse']:.4f}")
    for key, h in (doc.get("hparams") or {}).items():
        law = h["law"]
        lines.append(f"optimal {key}: {law['coef']:.4g} * C^{law['exponent']:.4f} ({law['n_points']} budgets)")
    return "\n".join(lines)
