"""Faults under fsdp2 on 2 ranks: a rank SIGKILLed mid-run under `llmctl pretrain --nproc-per-node 2
--auto-restart 1` (torchrun --max-restarts 1 with --resume auto) finishes with the uninterrupted run's final
loss; a rank killed while a checkpoint is being saved leaves the pointer on the last complete one, which one
process then resumes to the same result."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest
from engine_helpers import child_env, events, torchrun
from parallel_helpers import (ITERS, assert_losses_match, cli_args, final_state, kill_tree, pretrain_in_process,
                              rank_pid, run_tree, sets)

from llmctl.core.nn.checkpoint import latest_iteration, load_checkpoint

pytestmark = pytest.mark.slow
FSDP2 = ["parallel.strategy=fsdp2"]


def test_killed_rank_restarts_and_finishes_like_the_uninterrupted_run(corpus, reference, test_plugins, tmp_path):
    run = tmp_path / "restart"
    cmd = [sys.executable, "-m", "llmctl.cli", *cli_args(sets(corpus, run, *FSDP2)),
           "--nproc-per-node", "2", "--auto-restart", "1"]
    done = run_tree(cmd, child_env(test_plugins, LLMCTL_FAULTS="kill_at_step=7,kill_rank=1"), timeout=240)
    assert done.returncode == 0, done.stdout[-4000:]
    assert (run / "ckpt" / ".faults_killed_at_7").is_file()  # rank 1 really died at step 7
    assert [e["step"] for e in events(run / "logs" / "run.jsonl", "resume")] == [5]
    assert_losses_match(run, reference, 1e-4, steps=[ITERS])
    assert final_state(run)["iteration"] == ITERS


def test_rank_killed_mid_save_leaves_the_pointer_on_a_complete_checkpoint(corpus, reference, test_plugins,
                                                                          tmp_path):
    run = tmp_path / "midsave"
    cmd = torchrun(2, *cli_args(sets(corpus, run, *FSDP2)))
    proc = subprocess.Popen(cmd, env=child_env(test_plugins, LLMCTL_FAULTS=f"hang_at_save={ITERS}"),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    shard = run / "ckpt" / f".iter_{ITERS:07d}.tmp" / "mp_rank_00" / "model_optim_rng.pt"
    try:
        deadline = time.monotonic() + 180
        while not shard.is_file():  # every shard written; the writer stalls before publishing
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            assert time.monotonic() < deadline, "timed out waiting for the save"
            time.sleep(0.05)
        pid = rank_pid(proc, 1)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
    finally:
        kill_tree(proc)
    ckpt = run / "ckpt"
    assert latest_iteration(ckpt) == 5 and not (ckpt / f"iter_{ITERS:07d}").exists()
    assert load_checkpoint(ckpt)[0]["iteration"] == 5
    pretrain_in_process(sets(corpus, run), resume="auto")  # one process takes over the 2-rank checkpoint
    assert not (ckpt / f".iter_{ITERS:07d}.tmp").exists()  # the stale temp dir was removed
    assert_losses_match(run, reference, 1e-4, steps=range(6, ITERS + 1))
