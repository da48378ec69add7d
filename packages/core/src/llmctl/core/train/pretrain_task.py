"""The built-in `pretrain` task: next-token prediction over a (blended) tokenized corpus, with Megatron's
per-source "channel" losses when the corpus is a blend.

Samples come from the dataset plugin named by `data.dataset` ("gpt", registered by llmctl-data): `seq_length
+ 1` tokens and a source index each. Labels are the inputs shifted by one; a dataset may mark tokens not to
train on with -100 in an optional `labels` array, and the loss sums only the others.

A run in stages reads one dataset per stage blend and length (`build_stage_datasets`); the channels are the
union of every blend's sources, so `loss/<source>` means the same source in every stage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UserError
from ..plugins import lookup
from .task import Metrics, Task, head_loss, next_token_loss


def channel_names(source_names: list[str]) -> list[str]:
    """Short names for the per-source losses: the prefix's file name ("data/zh_corpus" -> "zh_corpus"), or the
    whole prefix where two sources share a file name."""
    short = [Path(str(n)).name for n in source_names]
    return short if len(set(short)) == len(short) else [str(n) for n in source_names]


class _Channels:
    """A stage's dataset with its source indices renumbered into the run's channels (every stage's sources)."""

    def __init__(self, ds, index: list[int]):
        self.ds, self.index = ds, np.asarray(index)
        self.source_names = ds.source_names

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> dict[str, Any]:
        sample = dict(self.ds[i])
        sample["source"] = int(self.index[int(sample["source"])])
        return sample

    @property
    def sample_sources(self):
        own = getattr(self.ds, "sample_sources", None)
        return None if own is None else self.index[np.asarray(own)]


class PretrainTask(Task):
    name = "pretrain"

    def __init__(self, cfg):
        super().__init__(cfg)
        self.sources: list[str] = []
        self.channels: list[str] = []

    def build_datasets(self, num_train_samples: int, num_val_samples: int):
        d = self.cfg.data
        return self.build_stage_datasets(d.path, d.seq_length, num_train_samples, num_val_samples)

    def build_stage_datasets(self, data_path, seq_length: int, num_train_samples: int, num_val_samples: int,
                             curriculum: dict | None = None):
        d, seed = self.cfg.data, self.cfg.train.seed
        if not data_path:
            raise UserError("config key 'data.path' is required: a prefix written by `llmctl data tokenize` "
                            "or a Megatron blend like '0.7 data/en 0.3 data/zh'")  # the dataset checks the files
        build = lookup("datasets", d.dataset)
        order = {"curriculum": curriculum} if curriculum else {}  # only datasets that order their samples
        train = build(data_path, seq_len=seq_length, num_samples=num_train_samples, seed=seed, split="train",
                      **order)
        val = (build(data_path, seq_len=seq_length, num_samples=num_val_samples, seed=seed, split="val")
               if num_val_samples else None)
        names = [str(n) for n in train.source_names]
        for name in names:
            if name not in self.sources:
                self.sources.append(name)
        self.channels = channel_names(self.sources)
        index = [self.sources.index(n) for n in names]
        if index != list(range(len(names))):
            train = _Channels(train, index)
            val = _Channels(val, index) if val is not None else None
        return train, val

    def metric_names(self) -> list[str]:
        return [f"loss/{c}" for c in self.channels] if len(self.channels) > 1 else []

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        tokens = torch.as_tensor(np.stack([s["tokens"] for s in samples]), dtype=torch.long)
        batch = {"input_ids": tokens[:, :-1], "labels": tokens[:, 1:].clone(),
                 "source": torch.as_tensor([int(s["source"]) for s in samples])}
        if "labels" in samples[0]:  # a dataset that masks some targets itself
            batch["labels"] = torch.as_tensor(np.stack([s["labels"] for s in samples]),
                                              dtype=torch.long)[:, 1:]
        return batch

    def loss(self, model, batch) -> tuple[torch.Tensor, torch.Tensor, Metrics]:
        per_token, _, _ = next_token_loss(model, batch["input_ids"], batch["labels"])
        return self._sums(per_token, batch)

    def loss_from_hidden(self, model, hidden, batch) -> tuple[torch.Tensor, torch.Tensor, Metrics]:
        return self._sums(head_loss(model, hidden, batch["labels"]), batch)

    def _sums(self, per_token: torch.Tensor, batch) -> tuple[torch.Tensor, torch.Tensor, Metrics]:
        loss_sum, n_tokens = per_token.sum(), (batch["labels"] != -100).sum()
        metrics: Metrics = {}
        if len(self.channels) > 1:
            per_sample = per_token.detach().sum(1)
            tokens_per_sample = (batch["labels"] != -100).sum(1).to(per_sample.dtype)
            sums = torch.zeros(len(self.channels), device=per_sample.device).index_add_(
                0, batch["source"], per_sample)
            counts = torch.zeros_like(sums).index_add_(0, batch["source"], tokens_per_sample)
            for i, name in enumerate(self.metric_names()):
                metrics[name] = (sums[i], counts[i])
        return loss_sum, n_tokens, metrics
