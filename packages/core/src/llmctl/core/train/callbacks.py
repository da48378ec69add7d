"""Callbacks: code that watches or perturbs a run from outside the driver (profilers, extra sinks, and the
fault injection the tests need: a NaN loss, a SIGKILL at a step, a stall in the middle of a save).

A callback is any object with some of the methods of `Callback`. They come from two places: `pretrain(cfg,
callbacks=[...])` for in-process use, and the plugin bus (`register_callbacks(register)` ->
`register(name, callback)`) for runs in their own process (`llmctl pretrain`, torchrun workers), so a test
ships its faults as a plugin distribution and production code carries no test switches.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable

import torch


class Callback:
    """Every hook is optional; the driver calls only what an object defines."""

    def on_train_start(self, trainer: Any) -> None: ...

    def on_step_start(self, trainer: Any, step: int) -> None: ...

    def on_micro_batch_loss(self, trainer: Any, step: int, loss_sum: torch.Tensor) -> torch.Tensor:
        """May replace the micro-batch's summed loss before backward (e.g. a NaN to test the guards)."""
        return loss_sum

    def on_checkpoint_publish(self, trainer: Any, tmp_dir: Path) -> None:
        """Runs on the writing rank when every shard of a checkpoint is on disk, before the rename and the
        pointer move."""

    def on_train_end(self, trainer: Any) -> None: ...


class CallbackList:
    """Calls one hook on every callback that defines it, in order."""

    def __init__(self, callbacks: Iterable[Any]):
        self.callbacks = list(callbacks)

    def call(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            fn = getattr(cb, hook, None)
            if fn is not None:
                fn(*args)

    def transform_loss(self, trainer: Any, step: int, loss_sum: torch.Tensor) -> torch.Tensor:
        for cb in self.callbacks:
            fn = getattr(cb, "on_micro_batch_loss", None)
            if fn is not None:
                loss_sum = fn(trainer, step, loss_sum)
        return loss_sum


def bus_callbacks() -> list[Any]:
    """Callbacks registered by plugins, in registration order."""
    from ..plugins import get_bus

    return [entry.value for entry in get_bus().registry("callbacks").values()]
