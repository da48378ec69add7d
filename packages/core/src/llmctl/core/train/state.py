"""What a checkpoint must hold for an exact resume, in forms `torch.load(weights_only=True)` accepts.

RNG states of python, numpy, torch and the accelerator become tensors/lists (numpy's state tuple and
python's are not loadable with weights_only otherwise); the loop's counters and the data positions live in
TrainState: consumed samples over the run, and per dataset (a stage's blend at its sequence length) the next
sample to read, so a run in stages resumes every blend where it was.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Any

import numpy as np
import torch


@dataclasses.dataclass
class TrainState:
    iteration: int = 0
    consumed_samples: int = 0  # data position: the next global batch starts at this sample index
    skipped_samples: int = 0  # samples jumped over by guard rollbacks
    skipped_iters: int = 0  # steps whose update was not applied (guards, fp16 overflow)
    nan_iters: int = 0
    rollbacks: int = 0
    guard_window: list[float] = dataclasses.field(default_factory=list)
    consumed_tokens: int | None = None  # None: a checkpoint from before stages (consumed_samples x seq_length)
    data_positions: dict[str, int] = dataclasses.field(default_factory=dict)  # stages.data_key -> next sample
    stage: str | None = None  # the stage of `iteration` (checked on resume)
    stage_tokens: dict[str, float] = dataclasses.field(default_factory=dict)  # the stage's trained tokens per source
    loss_windows: dict[str, list[float]] = dataclasses.field(default_factory=dict)  # loss spike guard
    window_stage: str | None = None  # whose steps the guard windows hold (they restart at a boundary)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainState":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def _accelerator(device: torch.device):
    """torch.cuda / torch.npu: both expose get_rng_state/set_rng_state(device)."""
    return None if device.type == "cpu" else getattr(torch, device.type, None)


def capture_rng(device: torch.device) -> dict[str, Any]:
    version, py_keys, gauss = random.getstate()
    _, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": {"version": version, "keys": list(py_keys), "gauss": gauss},
        "numpy": {"keys": torch.from_numpy(np_keys.astype(np.int64)), "pos": int(np_pos),
                  "has_gauss": int(np_has_gauss), "gauss": float(np_gauss)},
        "torch": torch.get_rng_state(),
    }
    acc = _accelerator(device)
    if acc is not None:
        state["device"] = acc.get_rng_state(device)
    return state


def restore_rng(state: dict[str, Any], device: torch.device) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(py["keys"]), py["gauss"]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"].cpu())
    acc = _accelerator(device)
    if acc is not None and "device" in state:
        acc.set_rng_state(state["device"].cpu(), device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA/NPU device
