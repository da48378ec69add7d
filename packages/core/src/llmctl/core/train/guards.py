"""Loss/grad guards: decide from one step's loss and grad norm whether its update may be applied.

A NaN/inf loss or grad norm, or a grad norm far above the recent ones (z-score over a rolling window of good
steps), marks the step bad: the loop skips its optimizer update. Several bad steps in a row mean the model or
the data went wrong, and the loop rolls back to the last checkpoint (see loop.Trainer.rollback). The loss
spike guard watches the loss itself, up and down, per channel (`LossSpikeGuard`). Torch-free and pure, so the
decision is easy to test and its state (the windows) goes into the checkpoint.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import statistics

from .config import GuardsConfig, LossSpikeConfig


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


# ---- loss spikes ---------------------------------------------------------------------------------------------
SEVERITY = {"warn": 0, "skip": 1, "rollback": 2}


@dataclasses.dataclass
class Spike:
    channel: str  # "loss", or "loss/<source>" for a channel of a blend
    direction: str  # "up" | "down"
    value: float
    mean: float
    score: float  # the z-score, or the ratio (loss / mean up, mean / loss down)
    threshold: float
    action: str  # warn | skip | rollback
    method: str = "zscore"

    def describe(self) -> str:
        return (f"{self.channel} {'jumped up' if self.direction == 'up' else 'dropped down'} to {self.value:.4g} "
                f"(recent mean {self.mean:.4g}, {self.method} {self.score:.2f} > {self.threshold:g})")


class LossSpikeGuard:
    """The training loss (and each channel's) against its recent trend: over the last `window` accepted
    steps, a z-score or a ratio beyond the threshold of its direction (up: a jump, down: a drop) is a spike,
    handled by that direction's action. Torch-free and pure: `check` decides, `accept` adds an applied step's
    losses to the windows, `windows` go into the checkpoint."""

    def __init__(self, cfg: LossSpikeConfig, windows: dict[str, list[float]] | None = None):
        self.cfg = cfg
        self.windows: dict[str, collections.deque[float]] = {
            k: collections.deque(v, maxlen=cfg.window) for k, v in (windows or {}).items()}
        self._last: dict[str, float] = {}

    def check(self, losses: dict[str, float]) -> list[Spike]:
        """The spikes among this step's `losses` ({"loss": x, "loss/web": y, ...}; NaN/inf are the grad
        guard's business), worst action first."""
        self._last = {k: v for k, v in losses.items() if math.isfinite(v)}
        spikes = []
        for channel, value in self._last.items():
            window = self.windows.get(channel)
            if window is None or len(window) < max(2, self.cfg.min_history):
                continue
            mean = statistics.fmean(window)
            for direction, rule in (("up", self.cfg.up), ("down", self.cfg.down)):
                if rule.threshold <= 0:
                    continue
                if self.cfg.method == "zscore":
                    std = max(statistics.pstdev(window), 1e-12 + 1e-3 * abs(mean))
                    score = (value - mean) / std * (1 if direction == "up" else -1)
                else:
                    score = value / mean if direction == "up" else mean / max(value, 1e-12)
                if score > rule.threshold:
                    spikes.append(Spike(channel, direction, value, mean, score, rule.threshold, rule.action,
                                        self.cfg.method))
        return sorted(spikes, key=lambda s: -SEVERITY[s.action])

    def accept(self) -> None:
        """The last checked step was applied: its losses join the windows."""
        for channel, value in self._last.items():
            self.windows.setdefault(channel, collections.deque(maxlen=self.cfg.window)).append(value)

    def reset(self) -> None:
        self.windows.clear()

    def state(self) -> dict[str, list[float]]:
        return {k: list(v) for k, v in self.windows.items()}
