"""Loss/grad guards: decide from one step's loss and grad norm whether its update may be applied.

A NaN/inf loss or grad norm, or a grad norm far above the recent ones (z-score over a rolling window of good
steps), marks the step bad: the loop skips its optimizer update. Several bad steps in a row mean the model or
the data went wrong, and the loop rolls back to the last checkpoint (see loop.Trainer.rollback). Torch-free
and pure, so the decision is easy to test and its state (the window) goes into the checkpoint.
"""

from __future__ import annotations

import collections
import math
import statistics

from .config import GuardsConfig


class Guard:
    def __init__(self, cfg: GuardsConfig, history: list[float] | None = None):
        self.cfg = cfg
        self.window: collections.deque[float] = collections.deque(history or [], maxlen=cfg.window)
        self.consecutive = 0

    def check(self, loss: float, grad_norm: float, *, overflow_ok: bool = False) -> str | None:
        """The reason this step is bad, or None. `overflow_ok` (fp16): an inf grad norm with a finite loss is
        the loss scaler's normal overflow, handled by the scaler, not an event."""
        if not math.isfinite(loss):
            return f"non-finite loss ({loss})"
        if not math.isfinite(grad_norm):
            return None if overflow_ok else f"non-finite grad norm ({grad_norm})"
        z = self.zscore(grad_norm)
        if self.cfg.spike_zscore > 0 and z is not None and z > self.cfg.spike_zscore:
            return f"grad norm spike ({grad_norm:.4g}, z-score {z:.1f} > {self.cfg.spike_zscore:g})"
        return None

    def zscore(self, grad_norm: float) -> float | None:
        if len(self.window) < max(2, self.cfg.min_history):
            return None
        mean = statistics.fmean(self.window)
        std = statistics.pstdev(self.window)
        return (grad_norm - mean) / max(std, 1e-12 + 1e-3 * abs(mean))

    def record(self, bad: bool, grad_norm: float) -> bool:
        """Count the step; True when it is the `max_consecutive`-th bad one in a row (time to roll back)."""
        if not bad:
            self.consecutive = 0
            if math.isfinite(grad_norm):
                self.window.append(grad_norm)
            return False
        self.consecutive += 1
        return self.consecutive >= self.cfg.max_consecutive
