"""`llmctl quickstart` end to end, as the README runs it: a real console-script subprocess on a fresh dir."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_quickstart_learns_and_beats_baselines(tmp_path: Path):
    out = tmp_path / "qs"
    llmctl = shutil.which("llmctl") or str(Path(sys.executable).parent / "llmctl")
    proc = subprocess.run([llmctl, "quickstart", "--out-dir", str(out)], capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    md = (out / "summary.md").read_text()

    # Learning is measurable: val loss clearly below the best context-free (unigram) model of the same data.
    assert summary["val_loss"] < 0.5 * summary["unigram_baseline"], summary
    assert "below" in md and "NOT below" not in md

    # The model answers its generated multiple-choice set well above chance (1 in 4). With n questions a
    # guesser exceeds chance + 3 sigma with probability ~0.1%, so this cannot pass by luck.
    n, acc = summary["mc_questions"], summary["mc_accuracy"]
    assert n >= 40
    assert acc > 0.25 + 3 * math.sqrt(0.25 * 0.75 / n), summary

    # The run was saved and resumed once: two checkpoints, pointer on the last, and a stop/resume in the log.
    ckpt = out / "checkpoints"
    assert (ckpt / "latest_checkpointed_iteration.txt").read_text().strip() == str(summary["val_step"])
    assert len(list(ckpt.glob("iter_*"))) == 2
    log = (out / "logs" / "quickstart.log").read_text()
    assert "successfully saved checkpoint" in log
    # Every artifact named in the summary exists.
    for rel in ("plots/curves.png", "eval/results.json", "tokenizer/tokenizer.json", "data/tokens/toy_train.bin",
                "data/tokens/toy_val.idx"):
        assert (out / rel).is_file(), rel
    assert all(s["completion"] for s in summary["samples"])

    # Running it again replaces the previous run instead of mixing checkpoints from both.
    again = subprocess.run([llmctl, "quickstart", "--out-dir", str(out), "--train-iters", "60"],
                           capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "replacing the previous quickstart run" in again.stderr
    assert (ckpt / "latest_checkpointed_iteration.txt").read_text().strip() == "60"
    assert sorted(p.name for p in ckpt.glob("iter_*")) == ["iter_0000030", "iter_0000060"]
