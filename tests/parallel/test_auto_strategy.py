"""`parallel.strategy: auto` with `--tp 2` under `llmctl pretrain --nproc-per-node 2` picks model_parallel
(core's resolve_strategy, also in the launcher's check before it execs torchrun) and trains: one process's
losses on the same global batch."""

from __future__ import annotations

import sys

import pytest
from engine_helpers import child_env, run_tree
from parallel_helpers import ITERS, assert_losses_match, cli_args, final_state, sets

pytestmark = pytest.mark.slow


def test_auto_with_tp2_runs_model_parallel(corpus, reference, tmp_path):
    run = tmp_path / "auto-tp2"
    cmd = [sys.executable, "-m", "llmctl.cli", *cli_args(sets(corpus, run, "parallel.strategy=auto")),
           "--nproc-per-node", "2", "--tp", "2"]
    done = run_tree(cmd, child_env(), timeout=240)
    assert done.returncode == 0, done.stdout[-4000:]
    text = (run / "logs" / "run.log").read_text()
    assert "parallel model_parallel (world 2: dp 1 x tp 2 x pp 1 x cp 1)" in text
    assert_losses_match(run, reference, 1e-4)
    assert final_state(run)["iteration"] == ITERS
