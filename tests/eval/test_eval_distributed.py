"""Under torchrun (2 CPU ranks, gloo) questions and perplexity windows are sharded and gathered: rank 0 writes
the same predictions and metrics as a single process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest
from eval_helpers import MMLU_DIR, predictions


def test_two_ranks_match_one_process(cli, tmp_path, hf_model_dir):
    text = tmp_path / "t.txt"
    text.write_text("It was the best of times, it was the worst of times. " * 40, encoding="utf-8")
    args = ["eval", "run", "--task", "mmlu,ppl", "--ckpt-dir", hf_model_dir, "--data-dir", f"mmlu={MMLU_DIR}",
            "--data-dir", f"ppl={text}", "--subjects", "anatomy,astronomy", "--limit", 5, "--shots", 2,
            "--ppl-window", 64]
    code, _, err = cli(*args, "--out-dir", tmp_path / "one")
    assert code == 0, err
    env = {**os.environ, "LLMCTL_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--standalone",
                             "-m", "llmctl.cli", *map(str, args), "--out-dir", tmp_path / "two"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)  # its own process group: a hang kills the workers too
    try:
        _, stderr = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, stderr[-3000:]
    one = json.loads((tmp_path / "one" / "results.json").read_text())
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    assert two["settings"]["world_size"] == 2
    assert two["tasks"]["mmlu"]["metrics"] == one["tasks"]["mmlu"]["metrics"]
    assert two["tasks"]["ppl"]["metrics"]["tokens"] == one["tasks"]["ppl"]["metrics"]["tokens"]
    assert two["tasks"]["ppl"]["metrics"]["ppl"] == pytest.approx(one["tasks"]["ppl"]["metrics"]["ppl"], rel=1e-6)
    a, b = predictions(tmp_path / "one", "mmlu"), predictions(tmp_path / "two", "mmlu")
    assert [(r["subject"], r["id"], r["pred"]) for r in a] == [(r["subject"], r["id"], r["pred"]) for r in b]
