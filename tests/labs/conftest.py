"""Fixtures of the lab tests: one CPU thread for in-process training (reproducible, and the fastest on a
shared 2-core box)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
