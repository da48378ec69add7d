"""Pretraining in stages under torchrun (gloo, CPU, fp32), 2 ranks: data parallel (ddp) and tensor parallel
(TP 2 with sequence parallelism). Rank 1 is SIGKILLed inside stage 2 (step 27: the last checkpoint is at 25)
and again at step 33 (the last checkpoint is exactly the 2 -> 3 boundary, 30); torchrun restarts the workers,
which resume from those checkpoints, and the run ends with the uninterrupted 1-process run's losses at every
step, its final weights and AdamW moments, its held-out perplexities and its data positions."""

from __future__ import annotations

import pytest
import torch
from engine_helpers import child_env, run_tree, torchrun
from stage_helpers import cli_args, events, records, staged_sets, train_records

from llmctl.core.nn.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow

LAYOUTS = {"ddp": (["parallel.strategy=ddp"], 1e-5, 1e-6),
           "tp2": (["parallel.strategy=tp", "parallel.tp=2", "parallel.sequence_parallel=true"], 1e-4, 1e-4),
           # the pipeline's schedule is rebuilt at each boundary (micro-batches of 64, then 128 tokens)
           "pp2": (["parallel.strategy=pp", "parallel.pp=2"], 1e-5, 1e-6)}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_killed_inside_stage_2_and_at_the_boundary_resumes_to_the_one_process_run(
        layout, staged_corpora, staged_reference, engine_plugins, tmp_path):
    overrides, rel, atol = LAYOUTS[layout]
    cmd = torchrun(2, *cli_args(staged_sets(staged_corpora, tmp_path, *overrides), "--resume", "auto"),
                   max_restarts=2)
    done = run_tree(cmd, child_env(engine_plugins, LLMCTL_FAULTS="kill_at_step=27+33,kill_rank=1"), timeout=420)
    assert done.returncode == 0, done.stdout[-4000:]
    for step in (27, 33):
        assert (tmp_path / "ckpt" / f".faults_killed_at_{step}").is_file()  # rank 1 really died there
    assert [e["step"] for e in events(tmp_path, "resume")] == [25, 30]
    assert done.stdout.count("done: step 40") == 1  # one summary line, from rank 0
    got, want = train_records(tmp_path), train_records(staged_reference)
    assert sorted(got) == sorted(want)
    for step, r in want.items():
        assert got[step]["stage"] == r["stage"]
        assert got[step]["loss"] == pytest.approx(r["loss"], rel=rel), (step, got[step]["loss"], r["loss"])
    heldout = lambda run: {r["step"]: (r["ppl/wiki"], r["ppl/code"]) for r in records(run) if "ppl/wiki" in r}  # noqa: E731
    h, hw = heldout(tmp_path), heldout(staged_reference)
    assert sorted(h) == sorted(hw)
    for step in hw:
        assert h[step] == pytest.approx(hw[step], rel=rel * 10), step
    a, b = load_checkpoint(tmp_path / "ckpt")[0], load_checkpoint(staged_reference / "ckpt")[0]
    assert a["train_state"]["data_positions"] == b["train_state"]["data_positions"]
    assert a["model"].keys() == b["model"].keys()
    for name, tensor in b["model"].items():
        torch.testing.assert_close(a["model"][name], tensor, rtol=1e-3, atol=atol, msg=name)
    for i, moments in b["optimizer"]["state"].items():
        for key, value in moments.items():
            torch.testing.assert_close(a["optimizer"]["state"][i][key], value, rtol=1e-3, atol=atol,
                                       msg=f"{i}.{key}")
