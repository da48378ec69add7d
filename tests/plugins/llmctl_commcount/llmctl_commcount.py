"""Test-only: `torch-ddp` is core's plain DistributedDataParallel strategy (no options beyond torch's), and with
LLMCTL_COMMCOUNT=FILE a callback replaces the DDP model's communication by a counting all-reduce hook and
writes, per optimizer step, [all-reduce calls, distinct buckets reduced] to FILE (JSON, rank 0)."""

from __future__ import annotations

import json
import os

from llmctl.core.plugins import hookimpl


class CountAllReduce:
    def __init__(self):
        self.steps: list[list[int]] = []  # per step: bucket index of every all-reduce

    def hook(self, group, bucket):
        from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

        self.steps[-1].append(bucket.index())
        return allreduce_hook(group, bucket)

    def on_train_start(self, trainer):
        if os.environ.get("LLMCTL_COMMCOUNT"):
            trainer.module.register_comm_hook(None, self.hook)

    def on_step_start(self, trainer, step):
        self.steps.append([])

    def on_train_end(self, trainer):
        path = os.environ.get("LLMCTL_COMMCOUNT")
        if path and trainer.par.rank == 0:
            with open(path, "w") as f:
                json.dump([[len(s), len(set(s))] for s in self.steps], f)


@hookimpl
def register_parallelisms(register):
    register("torch-ddp", "llmctl.core.train.parallelism:DDP")


@hookimpl
def register_callbacks(register):
    register("commcount", CountAllReduce())
