"""Gradient communication of `ddp` on 2 ranks: with no hook it is torch's DistributedDataParallel exactly;
non-final micro-batches of an accumulation send nothing (all-reduces counted by a comm hook); PowerSGD and
bf16 compression train (the loss falls) and log what they send against a plain all-reduce."""

from __future__ import annotations

import json

import pytest
from parallel_helpers import losses, records

pytestmark = pytest.mark.slow


def test_hook_off_is_plain_torch_ddp_exactly(dp_run):
    ours = dp_run("ddp", "parallel.strategy=ddp")
    peer = dp_run("torch-ddp", "parallel.strategy=torch-ddp")  # core's DDP: torch's wrapper and nothing else
    assert losses(ours) == losses(peer)
    assert "comm_ratio" not in records(ours)[-1]


def test_accumulation_all_reduces_only_on_the_last_micro_batch(dp_run, tmp_path):
    count = tmp_path / "count.json"
    # micro batch 1 -> 4 micro-batches per rank per step; small buckets -> several all-reduces per step
    dp_run("count", "parallel.strategy=ddp", "parallel.bucket_cap_mb=0.05", "train.micro_batch_size=1",
           "train.train_iters=3", "checkpoint.interval=0", env={"LLMCTL_COMMCOUNT": str(count)})
    per_step = json.loads(count.read_text())  # [all-reduces, distinct buckets] per step
    assert len(per_step) == 3 and per_step[-1][1] > 1  # DDP rebuilds its buckets after the first step
    # each bucket once per step, not once per micro-batch: the 3 no_sync micro-batches send nothing
    assert all(calls == buckets for calls, buckets in per_step), per_step


@pytest.mark.parametrize("hook, ratio", [("powersgd", 4.0), ("bf16", 2.0)])
def test_compression_hooks_train_and_log_their_ratio(hook, ratio, dp_run, reference):
    run = dp_run(hook, "parallel.strategy=ddp", f"parallel.comm_hook={hook}", "parallel.start_powersgd_iter=3",
                 "parallel.powersgd_rank=1")
    recs = records(run)
    loss = [r["loss"] for r in recs]
    assert loss[-1] < loss[0] - 0.5, loss
    assert loss != [r for _, r in sorted(losses(reference).items())]  # the hook really changed the grads
    assert all(r["comm_mb_per_step"] > 0 for r in recs)
    if hook == "powersgd":  # plain all-reduce for the first 3 steps, then P and Q (and the 1-D grads) only
        assert [r["comm_ratio"] for r in recs[:3]] == [1.0, 1.0, 1.0]
        assert min(r["comm_ratio"] for r in recs[3:]) > ratio
    else:
        assert all(r["comm_ratio"] == ratio for r in recs)
