"""The report's PNGs, drawn with the same pyplot/save_figure/smooth as `llmctl plot` (so a curve here and a
curve from `llmctl plot curves` agree): one figure per question a lab asks — is the loss going down (loss,
and exp(loss) after a token threshold, where late differences show), what did the schedule do (LR), was it
stable (grad norm), how fast (throughput), and which ablation point won."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from ..plot import plot_exp_loss, pyplot, save_figure, smooth
from .gather import Bench, Run

#: The course lab's exp(loss) threshold; a toy run never gets there, so the default falls back (below).
LAB_TOKEN_THRESHOLD = 5e9


def default_token_threshold(runs: list[Run]) -> float:
    """5e9 (the lab's) when every run got past it, else half of the shortest run's tokens."""
    shortest = min(r.curve.tokens[-1] or 0.0 for r in runs)
    return LAB_TOKEN_THRESHOLD if shortest > LAB_TOKEN_THRESHOLD else shortest / 2


def _lines(series: list[tuple[str, list[float], list[float]]], output: Path, *, xlabel: str, ylabel: str,
           title: str, logy: bool = False, markers: list[tuple[str, list[float], list[float]]] = ()) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.6))
    colors = {}
    for name, xs, ys in series:
        line, = ax.plot(xs, ys, label=name, lw=1.3)
        colors[name] = line.get_color()
    for name, xs, ys in markers:
        ax.plot(xs, ys, "o--", ms=4, color=colors.get(name), label=f"{name} val")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    try:
        return save_figure(fig, output)
    finally:
        plt.close(fig)


def loss_figure(runs: list[Run], output: Path, smooth_window: int) -> Path:
    train = [(r.name, r.curve.tokens, smooth(r.curve.loss, smooth_window)) for r in runs]
    val = [(r.name, r.curve.val_tokens, r.curve.val_loss) for r in runs if r.curve.val_loss]
    return _lines(train, output, xlabel="tokens", ylabel="lm loss", markers=val,
                  title=f"training loss (moving average of {smooth_window}) and validation loss")


def exp_loss_figure(runs: list[Run], output: Path, threshold: float, smooth_window: int) -> Path:
    return plot_exp_loss([r.curve for r in runs], output, token_threshold=threshold, smooth_window=smooth_window,
                         title=f"exp(loss) after {threshold:,.0f} tokens")


def lr_figure(runs: list[Run], output: Path) -> Path | None:
    series = [(r.name, [t for t, v in zip(r.curve.tokens, r.curve.lr) if v is not None],
               [v for v in r.curve.lr if v is not None]) for r in runs]
    series = [s for s in series if s[2]]
    return _lines(series, output, xlabel="tokens", ylabel="learning rate", title="learning rate") if series \
        else None


def grad_norm_figure(runs: list[Run], output: Path, smooth_window: int) -> Path | None:
    series = []
    for r in runs:
        tokens = dict(zip(r.curve.step, r.curve.tokens))
        steps = [s for s in r.grad_norm if math.isfinite(r.grad_norm[s])]
        if steps:
            series.append((r.name, [tokens[s] for s in steps], smooth([r.grad_norm[s] for s in steps],
                                                                       smooth_window)))
    values = [v for _, _, ys in series for v in ys if v > 0]
    wide = bool(values) and max(values) > 20 * min(values)  # log scale only where a spike needs the room
    return _lines(series, output, xlabel="tokens", ylabel="grad norm (before clipping)", logy=wide,
                  title="gradient norm") if series else None


def throughput_figure(runs: list[Run], output: Path) -> Path | None:
    series = [(r.name, r.curve.step[1:], [v or 0.0 for v in r.curve.tokens_per_s[1:]]) for r in runs
              if any(r.curve.tokens_per_s[1:])]
    return _lines(series, output, xlabel="step", ylabel="tokens/s", title="throughput (first interval dropped)") \
        if series else None


def _bars(labels: list[str], values: list[float | None], output: Path, *, ylabel: str, title: str,
          failed: list[bool] | None = None) -> Path:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(5.0, 1.1 * len(labels) + 2), 3.8))
    failed = failed or [v is None for v in values]
    bars = ax.bar(range(len(labels)), [v or 0.0 for v in values],
                  color=["tab:gray" if f else "tab:blue" for f in failed])
    for bar, f, v in zip(bars, failed, values):
        ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height(), "failed" if f else f"{v:,.4g}",
                ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    try:
        return save_figure(fig, output)
    finally:
        plt.close(fig)


def ablation_figure(bench: Bench, output: Path) -> Path:
    rows: list[dict[str, Any]] = bench.rows
    return _bars([r["config"] for r in rows], [r.get("tokens_per_s") for r in rows], output,
                 ylabel="tokens/s = TOKENS_PER_STEP / sec_per_step", title="throughput ablation",
                 failed=[r["status"] != "ok" for r in rows])


def quality_figure(runs: list[Run], output: Path) -> Path:
    """Final validation loss per run (train loss where a run has no validation): the model-quality ablation."""
    values = [r.curve.val_loss[-1] if r.curve.val_loss else r.curve.loss[-1] for r in runs]
    return _bars([r.name for r in runs], values, output, ylabel="final val loss (train loss if none)",
                 title="model-quality ablation")
