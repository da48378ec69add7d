"""Learning-rate schedules in closed form (Megatron's OptimizerParamScheduler shapes), so the LR at any step
is a pure function of the step: a resumed run needs only the step count to be on the same curve.

Iteration i (1-based) of a segment of `total` iterations trains with lr_at(i): linear warmup from
`warmup_init` (0: Megatron's default) to `lr` over `warmup` steps (so the first step is not wasted at 0), then
  cosine:   min_lr + (lr - min_lr) * 0.5 * (1 + cos(pi * r)),  r = (i - warmup) / (total - warmup)
  linear:   min_lr + (lr - min_lr) * (1 - r)
  constant: lr
  wsd:      lr until the last `decay_fraction` of the segment, then down to min_lr (warmup-stable-decay) in
            `decay_style`: linear (1 - r), cosine (0.5 * (1 + cos(pi * r))) or 1-sqrt (1 - sqrt(r), Hägele et
            al. 2024; Megatron's "minus_sqrt"), r the share of the decay done.
A run in stages (`stages.py`) is one such segment per stage, each on its own iterations.
"""

from __future__ import annotations

import math
from typing import Callable

DECAY_STYLES = ("linear", "cosine", "1-sqrt")


def decay_coefficient(r: float, style: str) -> float:
    """The share of (lr - min_lr) left after a fraction `r` of a decay of shape `style`."""
    if style == "linear":
        return 1 - r
    if style == "cosine":
        return 0.5 * (math.cos(math.pi * r) + 1.0)
    if style == "1-sqrt":
        return 1.0 - math.sqrt(r)
    raise ValueError(f"unknown decay style {style!r}")


def lr_at(i: int, *, lr: float, min_lr: float, total: int, warmup: int, schedule: str,
          decay_fraction: float = 0.2, decay_style: str = "linear", warmup_init: float = 0.0) -> float:
    """The learning rate for iteration `i` (1-based) of a segment of `total` iterations."""
    if warmup > 0 and i <= warmup:
        return lr * i / warmup if warmup_init == 0 else warmup_init + (lr - warmup_init) * i / warmup
    if schedule == "constant":
        return lr
    if i >= total:
        return min_lr
    if schedule == "wsd":
        decay_start = total - round(decay_fraction * total)
        if i <= max(decay_start, warmup):
            return lr
        r = (i - max(decay_start, warmup)) / (total - max(decay_start, warmup))
        if decay_style == "linear":
            return min_lr + (lr - min_lr) * (1 - r)
        return min_lr + decay_coefficient(r, decay_style) * (lr - min_lr)
    r = (i - warmup) / max(1, total - warmup)
    if schedule == "linear":
        return min_lr + (lr - min_lr) * (1 - r)
    if schedule == "cosine":
        return min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * r))
    raise ValueError(f"unknown schedule {schedule!r}")


def lr_lambda(*, lr: float, **kw) -> Callable[[int], float]:
    """The factor for torch's LambdaLR (base lr = `lr`): after k completed steps the optimizer holds lr_at(k+1)."""
    if lr == 0:
        return lambda k: 0.0
    return lambda k: lr_at(k + 1, lr=lr, **kw) / lr
