"""RNG capture/restore survives torch.save + torch.load(weights_only=True); the guard's decisions."""

from __future__ import annotations

import random

import numpy as np
import torch

from llmctl.core.train.config import GuardsConfig
from llmctl.core.train.guards import Guard
from llmctl.core.train.state import capture_rng, restore_rng


def _draw():
    return random.random(), float(np.random.rand()), np.random.randn(), torch.rand(3).tolist()


def test_rng_round_trip_through_weights_only_load(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    np.random.randn()  # leave numpy with a cached gaussian, the awkward part of its state
    state = capture_rng(torch.device("cpu"))
    torch.save({"rng_state": state}, tmp_path / "s.pt")
    want = _draw()
    random.seed(99)
    np.random.seed(99)
    torch.manual_seed(99)
    assert _draw() != want
    restore_rng(torch.load(tmp_path / "s.pt", weights_only=True)["rng_state"], torch.device("cpu"))
    assert _draw() == want


def test_guard_nan_spike_and_consecutive():
    g = Guard(GuardsConfig(spike_zscore=6.0, window=20, min_history=5, max_consecutive=2))
    assert g.check(float("nan"), 1.0).startswith("non-finite loss")
    assert g.check(2.0, float("inf")).startswith("non-finite grad norm")
    assert g.check(2.0, float("inf"), overflow_ok=True) is None  # fp16 overflow: the scaler's business
    for norm in (1.0, 1.1, 0.9, 1.05, 0.95):
        assert g.check(2.0, 50.0) is None  # fewer than min_history good steps: no z-score yet
        assert g.record(False, norm) is False
    assert g.check(2.0, 1.2) is None
    assert "grad norm spike" in g.check(2.0, 50.0)
    assert g.record(True, 50.0) is False and g.record(True, 50.0) is True  # the 2nd in a row: roll back
    assert len(g.window) == 5  # bad steps never enter the statistics
    assert g.record(False, 1.0) is False and g.consecutive == 0
    off = Guard(GuardsConfig(spike_zscore=0, min_history=2), history=[1.0, 1.0, 1.0])
    assert off.check(2.0, 1e6) is None  # spike test disabled: only NaN/inf count
