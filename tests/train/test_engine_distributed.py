"""The training engine across processes (gloo, CPU, fp32): a 2-process torchrun run of `llmctl pretrain -c
tiny` has one checkpoint writer and one log and trains exactly like one process on the same global batch;
a rank SIGKILLed under `torchrun --max-restarts 1` resumes to the same result; masked labels and uneven
lengths over 2 micro-batches x 2 ranks weigh like one forward over the whole batch."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from engine_helpers import child_env, events, free_port, run_tree, torchrun, train_losses, write_random_corpus

from llmctl.core.nn.checkpoint import latest_iteration, load_checkpoint

ITERS = 8
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_random_corpus(tmp_path_factory.mktemp("corpus") / "random")


def _sets(corpus, run, *extra: str) -> list[str]:
    sets = [f"data.path={corpus}", "data.seq_length=32", f"train.train_iters={ITERS}",
            "train.global_batch_size=8", "train.micro_batch_size=2", "train.lr=1e-4", "train.min_lr=1e-5", "train.warmup_iters=2",
            "eval.iters=1", "eval.interval=0", f"checkpoint.dir={run / 'ckpt'}", "checkpoint.interval=4",
            f"logging.dir={run / 'logs'}", "logging.name=run", "logging.interval=1", *extra]
    return ["pretrain", "-c", "tiny", *[a for s in sets for a in ("--set", s)]]


@pytest.fixture(scope="module")
def one_process(corpus, tmp_path_factory):
    run = tmp_path_factory.mktemp("one")
    done = run_tree([sys.executable, "-m", "llmctl.cli", *_sets(corpus, run)], child_env())
    assert done.returncode == 0, done.stdout[-3000:]
    return run


def _final_weights(run):
    state, _, _ = load_checkpoint(run / "ckpt")
    return state["model"]


def _assert_same_training(run, reference, final_only: bool = False):
    got, want = train_losses(run / "logs" / "run.jsonl"), train_losses(reference / "logs" / "run.jsonl")
    steps = [ITERS] if final_only else sorted(want)
    assert set(got) >= set(steps)
    for s in steps:
        assert got[s] == pytest.approx(want[s], rel=1e-5), (s, got[s], want[s])
    a, b = _final_weights(run), _final_weights(reference)
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6)


def test_two_process_torchrun_equals_one_process(corpus, one_process, tmp_path):
    run = tmp_path / "ddp"
    done = run_tree(torchrun(2, *_sets(corpus, run)), child_env())
    assert done.returncode == 0, done.stdout[-3000:]
    # one writer: one log pair, each save announced once, one checkpoint per save
    assert sorted(p.name for p in (run / "logs").iterdir()) == ["run.jsonl", "run.log"]
    assert done.stdout.count("successfully saved checkpoint from iteration       4") == 1
    assert "data_parallel_size .............................. 2" in done.stdout
    assert latest_iteration(run / "ckpt") == ITERS
    assert sorted(p.name for p in (run / "ckpt" / f"iter_{ITERS:07d}").iterdir()) == ["config.yaml", "mp_rank_00"]
    _assert_same_training(run, one_process)
    for log in (run, one_process):  # tokens_per_s counts every rank's tokens: the global batch's 8 x 32
        records = [json.loads(line) for line in (log / "logs" / "run.jsonl").read_text().splitlines()]
        records = [r for r in records if "tokens_per_s" in r]
        assert records and all(r["tokens_per_s"] * r["step_ms"] / 1000 == pytest.approx(8 * 32, rel=1e-6)
                               for r in records)


def test_a_killed_rank_restarts_under_torchrun_and_resumes(corpus, one_process, tmp_path, engine_plugins):
    run = tmp_path / "restart"
    cmd = torchrun(2, *_sets(corpus, run), "--resume", "auto", max_restarts=1)
    done = run_tree(cmd, child_env(engine_plugins, LLMCTL_FAULTS="kill_at_step=6,kill_rank=1"))
    assert done.returncode == 0, done.stdout[-3000:]
    assert (run / "ckpt" / ".faults_killed_at_6").is_file()  # rank 1 really died at step 6
    assert [e["step"] for e in events(run / "logs" / "run.jsonl", "resume")] == [4]
    _assert_same_training(run, one_process, final_only=True)


# ---- masked labels and uneven lengths --------------------------------------------------------------------
LENGTHS = [5, 32, 9, 17, 26, 3, 30, 12]  # one global batch of 8 samples, padded per micro-batch


class UnevenDataset:
    """Sample i: LENGTHS[i] tokens; the first i targets are a prompt (-100), the rest are trained."""

    def __len__(self):
        return 1000

    def __getitem__(self, i):
        n = LENGTHS[i % len(LENGTHS)]
        tokens = np.random.default_rng(i).integers(3, 1000, n + 1)
        labels = tokens[1:].copy()
        labels[: i % len(LENGTHS)] = -100
        return {"input_ids": tokens[:-1], "labels": labels}


def uneven_collate(samples):
    """Dynamic padding to the longest sample of the micro-batch; pads are -100."""
    width = max(len(s["input_ids"]) for s in samples)
    ids = torch.zeros((len(samples), width), dtype=torch.long)
    labels = torch.full((len(samples), width), -100, dtype=torch.long)
    for r, s in enumerate(samples):
        ids[r, : len(s["input_ids"])] = torch.as_tensor(s["input_ids"])
        labels[r, : len(s["labels"])] = torch.as_tensor(s["labels"])
    return {"input_ids": ids, "labels": labels}


def _uneven_task_plugin():
    from llmctl.core.plugins import get_bus, hookimpl
    from llmctl.core.train.task import Task, next_token_loss

    class UnevenTask(Task):
        def build_datasets(self, num_train_samples, num_val_samples):
            return UnevenDataset(), None

        def collate(self, samples):
            return uneven_collate(samples)

        def loss(self, model, batch):
            _, loss_sum, count = next_token_loss(model, batch["input_ids"], batch["labels"])
            return loss_sum, count, {}

    class Plugin:
        @hookimpl
        def register_tasks(self, register):
            register("uneven", UnevenTask)

    bus = get_bus()
    if not bus.pm.has_plugin("test-uneven-task"):
        bus.register_plugin(Plugin(), "test-uneven-task")


def _uneven_cfg(world: int):
    from llmctl.core.train import load_train_config

    return load_train_config("tiny", [
        "train.task=uneven", "data.seq_length=32", "train.train_iters=1", "train.global_batch_size=8",
        "train.micro_batch_size=2", "train.clip_grad=0", "guards.enabled=false", "eval.iters=0",
        f"parallel.strategy={'ddp' if world > 1 else 'single'}", "logging.dir=/tmp/llmctl-uneven-logs"])


def _uneven_step(rank: int, world: int, port: int, out: str) -> None:
    """One driver step on this rank; rank 0 saves (step loss, grads as they reach the optimizer)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank), LLMCTL_PROGRESS="0")
    torch.set_num_threads(1)
    _uneven_task_plugin()
    from llmctl.core.train.loop import Trainer

    trainer = Trainer(_uneven_cfg(world), echo=lambda line: None)
    named = dict(trainer.par.unwrap(trainer.module).named_parameters())
    seen = {}
    trainer.optimizer.step = lambda *a, **k: seen.update({n: p.grad.clone() for n, p in named.items()})
    data = trainer._loader(trainer.train_ds, 0)
    trainer.train_step(1, [next(data) for _ in range(trainer.accum)])
    if rank == 0:
        torch.save({"loss": trainer.acc["loss"].item(), "grads": seen, "accum": trainer.accum}, out)
    trainer.close()
    from llmctl.cli.main import leave_finished_worker

    leave_finished_worker()  # as `llmctl` under torchrun: no interpreter teardown after a finished run


def test_masked_uneven_batch_over_micro_batches_and_ranks_equals_one_forward(tmp_path):
    from llmctl.core.nn.build import build_model
    from llmctl.core.train.state import seed_everything

    out = str(tmp_path / "rank0.pt")
    mp.start_processes(_uneven_step, args=(2, free_port(), out), nprocs=2, start_method="spawn")
    got = torch.load(out, weights_only=True)
    assert got["accum"] == 2  # 8 samples = 2 per micro-batch x 2 micro-batches x 2 ranks

    cfg = _uneven_cfg(1)
    seed_everything(cfg.train.seed)
    model = build_model(cfg.model)
    batch = uneven_collate([UnevenDataset()[i] for i in range(8)])  # the whole global batch at once
    per_token = model(batch["input_ids"], batch["labels"])
    loss = per_token.sum() / (batch["labels"] != -100).sum()
    loss.backward()
    assert got["loss"] == pytest.approx(loss.item(), rel=1e-5)
    for name, p in model.named_parameters():
        torch.testing.assert_close(got["grads"][name], p.grad, rtol=1e-4, atol=1e-7, msg=name)
