"""The fit's figures (matplotlib, written atomically as PNGs beside fit.json):

- `isoflop.png`: left, loss vs N for each isoFLOP profile with approach 3's curve through it (and approach 2's
  parabola and minimum); right, loss vs FLOPs of every run with the fitted compute-optimal frontier;
- `contours.png`: the fitted law's loss contours over (N, D), the runs on it, the frontier N_opt(C), D_opt(C);
- `residuals.png`: log L - log L_hat of every run against FLOPs and against N;
- `benchmark_<name>.png`: accuracy vs loss with the fitted sigmoid.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from llmctl.core.plot import pyplot, save_figure

from .chinchilla import LawFit
from .isoflop import IsoFlopFit
from .runs import Runs


def _budget_colors(plt, groups: np.ndarray):
    budgets = sorted(set(groups.tolist()))
    cmap = plt.get_cmap("viridis")
    return budgets, {b: cmap(i / max(1, len(budgets) - 1)) for i, b in enumerate(budgets)}


def plot_isoflop(runs: Runs, law: LawFit | None, iso: IsoFlopFit | None, output: Path) -> Path:
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    groups = runs.groups()
    budgets, colors = _budget_colors(plt, groups)
    for b in budgets:
        sel = groups == b
        left.scatter(runs.params[sel], runs.loss[sel], color=colors[b], label=f"C = {b:.2g}", zorder=3)
        ns = np.geomspace(runs.params[sel].min() / 1.5, runs.params[sel].max() * 1.5, 100)
        if law is not None:
            left.plot(ns, law.loss(ns, b / (6 * ns)), color=colors[b], lw=1)
    if iso is not None:
        for b, coef, n_opt, l_opt in zip(iso.budgets, iso.parabolas, iso.n_opt, iso.loss_opt):
            color = colors.get(b, "gray")
            ns = np.geomspace(n_opt / 4, n_opt * 4, 100)
            left.plot(ns, np.polyval(coef, np.log(ns)), color=color, ls=":", lw=1)
            left.scatter([n_opt], [l_opt], color=color, marker="*", s=120, edgecolor="black", zorder=4)
    left.set(xscale="log", xlabel="parameters N", ylabel="loss", title="isoFLOP profiles (line: L(N, D), "
             "dotted: parabola, *: its minimum)")
    left.legend(fontsize=8)
    right.scatter(runs.flops, runs.loss, c=[colors[b] for b in groups], zorder=3)
    cs = np.geomspace(runs.flops.min() / 3, runs.flops.max() * 30, 100)
    if law is not None and law.alpha > 0 and law.beta > 0:
        n_opt, d_opt = law.optimal(cs)
        right.plot(cs, law.loss(n_opt, d_opt), color="black", label="compute-optimal frontier (approach 3)")
        right.axhline(law.E, color="gray", ls="--", lw=1, label=f"E = {law.E:.3f}")
    right.set(xscale="log", xlabel="training FLOPs C", ylabel="loss", title="loss vs compute")
    if right.get_legend_handles_labels()[0]:
        right.legend(fontsize=8)
    return save_figure(fig, output)


def plot_contours(runs: Runs, law: LawFit, output: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 5.2))
    ns = np.geomspace(runs.params.min() / 3, runs.params.max() * 3, 200)
    ds = np.geomspace(runs.tokens.min() / 3, runs.tokens.max() * 3, 200)
    grid_n, grid_d = np.meshgrid(ns, ds)
    surface = law.loss(grid_n, grid_d)
    levels = np.quantile(surface, np.linspace(0.02, 0.98, 12))
    contour = ax.contour(grid_n, grid_d, surface, levels=np.unique(levels), cmap="magma")
    ax.clabel(contour, fontsize=7, fmt="%.2f")
    ax.scatter(runs.params, runs.tokens, c="tab:blue", s=18, label="runs", zorder=3)
    if law.alpha > 0 and law.beta > 0:  # an exponent on its bound has no compute-optimal frontier
        cs = np.geomspace((6 * ns[0] * ds[0]), (6 * ns[-1] * ds[-1]), 100)
        n_opt, d_opt = law.optimal(cs)
        keep = (n_opt >= ns[0]) & (n_opt <= ns[-1]) & (d_opt >= ds[0]) & (d_opt <= ds[-1])
        a, b = law.exponents()
        ax.plot(n_opt[keep], d_opt[keep], color="black", label=f"frontier: N ∝ C^{a:.2f}, D ∝ C^{b:.2f}")
    ax.set(xscale="log", yscale="log", xlabel="parameters N", ylabel="tokens D", title="fitted L(N, D) contours")
    ax.legend(fontsize=8)
    return save_figure(fig, output)


def plot_residuals(runs: Runs, residuals: np.ndarray, output: Path) -> Path:
    plt = pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for ax, x, label in ((left, runs.flops, "training FLOPs C"), (right, runs.params, "parameters N")):
        ax.scatter(x, residuals, zorder=3)
        ax.axhline(0, color="gray", lw=1)
        ax.set(xscale="log", xlabel=label, ylabel="log L - log L_hat")
    left.set_title(f"residuals (RMS {np.sqrt(np.mean(residuals ** 2)):.4f})")
    return save_figure(fig, output)


def plot_benchmark(loss: np.ndarray, acc: np.ndarray, fit, output: Path) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.2))
    ax.scatter(loss, acc, zorder=3, label="runs")
    xs = np.linspace(loss.min() - 0.5, loss.max() + 0.2, 200)
    ax.plot(xs, fit.accuracy(xs), color="black", label="fitted sigmoid")
    ax.axhline(fit.floor, color="gray", ls="--", lw=1, label=f"floor {fit.floor:.2f}")
    ax.set(xlabel="validation loss", ylabel=f"{fit.name} accuracy", title=f"{fit.name} vs loss")
    ax.invert_xaxis()
    ax.legend(fontsize=8)
    return save_figure(fig, output)
