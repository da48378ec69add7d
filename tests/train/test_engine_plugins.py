"""A third-party Task (tests/plugins/llmctl_toy_task, a real distribution found through its entry point)
trains through `llmctl pretrain --set train.task=reverse` with the same driver: logs, checkpoints, exact
resume, its own `task:` keys checked with a did-you-mean."""

from __future__ import annotations

import json
import sys

import pytest
from engine_helpers import child_env, events, run_tree, train_losses

from llmctl.core.nn.checkpoint import latest_iteration, load_checkpoint

pytestmark = pytest.mark.slow


def _reverse(run, *extra: str) -> list[str]:
    sets = ["train.task=reverse", "task.length=4", "task.vocab=8", "model.vocab_size=16", "data.seq_length=8",
            "train.train_iters=60", "train.global_batch_size=16", "train.micro_batch_size=8", "train.lr=1e-2",
            "train.warmup_iters=2", "eval.iters=1", f"checkpoint.dir={run / 'ckpt'}", "checkpoint.interval=30",
            f"logging.dir={run / 'logs'}", "logging.name=run", "logging.interval=1"]
    return [sys.executable, "-m", "llmctl.cli", "pretrain", "-c", "tiny",
            *[a for s in sets for a in ("--set", s)], *extra]


def test_third_party_task_trains_saves_and_resumes(engine_plugins, tmp_path):
    env = child_env(engine_plugins)
    whole = run_tree(_reverse(tmp_path / "whole"), env)
    assert whole.returncode == 0, whole.stdout[-3000:]
    assert "llmctl reverse:" in whole.stdout  # the driver announces the task it runs
    losses = train_losses(tmp_path / "whole" / "logs" / "run.jsonl")
    assert sorted(losses) == list(range(1, 61))
    assert losses[60] < 0.7 * losses[1]  # it learns to reverse (only the trained half counts)
    state, config, _ = load_checkpoint(tmp_path / "whole" / "ckpt")
    assert config["train"]["task"] == "reverse" and config["task"] == {"length": 4, "vocab": 8}
    assert state["iteration"] == 60 and "layers.0.attn.q_proj.weight" in state["model"]

    split = tmp_path / "split"
    first = run_tree(_reverse(split, "--stop-at-step", "30"), env)
    assert first.returncode == 0 and latest_iteration(split / "ckpt") == 30, first.stdout[-3000:]
    second = run_tree(_reverse(split, "--resume", "auto"), env)
    assert second.returncode == 0, second.stdout[-3000:]
    assert [e["step"] for e in events(split / "logs" / "run.jsonl", "resume")] == [30]
    assert train_losses(split / "logs" / "run.jsonl") == losses  # bit-exact across the resume


def test_task_keys_are_checked_by_the_task(engine_plugins, tmp_path):
    done = run_tree(_reverse(tmp_path, "--set", "task.lenght=4"), child_env(engine_plugins))
    assert done.returncode == 2
    assert done.stdout.strip().splitlines()[-1] == "error: unknown config key 'task.lenght' (did you mean 'length'?)"


def test_plugins_lists_tasks_and_parallelisms(engine_plugins):
    done = run_tree([sys.executable, "-m", "llmctl.cli", "plugins", "--json"], child_env(engine_plugins))
    rows = {r["plugin"]: r for r in json.loads(done.stdout)}
    assert rows["toy_task"]["registered"]["tasks"] == ["reverse"]
    assert "pretrain" in rows["core"]["registered"]["tasks"]
    assert rows["faults"]["registered"]["callbacks"] == ["faults"] and not rows["faults"]["builtin"]
    assert rows["core"]["builtin"]
