"""Learning-rate schedules in closed form (Megatron's OptimizerParamScheduler shapes), so the LR at any step
is a pure function of the step: a resumed run needs only the step count to be on the same curve.

Iteration i (1-based) trains with lr_at(i): linear warmup to `lr` over `warmup` steps (lr * i / warmup, so the
first step is not wasted at 0), then
  cosine:   min_lr + (lr - min_lr) * 0.5 * (1 + cos(pi * r)),  r = (i - warmup) / (total - warmup)
  linear:   min_lr + (lr - min_lr) * (1 - r)
  constant: lr
  wsd:      lr until the last `decay_fraction` of the run, then linear to min_lr (warmup-stable-decay)
"""

from __future__ import annotations

import math
from typing import Callable


def lr_at(i: int, *, lr: float, min_lr: float, total: int, warmup: int, schedule: str,
          decay_fraction: float = 0.2) -> float:
    """The learning rate for iteration `i` (1-based)."""
    if warmup > 0 and i <= warmup:
        return lr * i / warmup
    if schedule == "constant":
        return lr
    if i >= total:
        return min_lr
    if schedule == "wsd":
        decay_start = total - round(decay_fraction * total)
        if i <= max(decay_start, warmup):
            return lr
        r = (i - max(decay_start, warmup)) / (total - max(decay_start, warmup))
        return min_lr + (lr - min_lr) * (1 - r)
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
