"""A third-party Task: the model reads `length` random tokens, a separator, and must write them reversed.
Only the reversed half is trained (labels -100 on the prompt), so the loss is a real masked-label loss.

    llmctl pretrain -c tiny --set train.task=reverse --set task.length=8 --set data.path=unused
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from llmctl.core.plugins import hookimpl
from llmctl.core.train.task import Task, next_token_loss

SEP = 1


@dataclasses.dataclass
class ReverseOptions:
    length: int = 8  # tokens to reverse
    vocab: int = 32  # tokens are drawn from [2, vocab)


class ReverseDataset:
    def __init__(self, n: int, length: int, vocab: int, seed: int):
        self.n, self.length, self.vocab, self.seed = n, length, vocab, seed

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        rng = np.random.default_rng([self.seed, i])
        seq = rng.integers(2, self.vocab, self.length)
        return {"tokens": np.concatenate([seq, [SEP], seq[::-1]]).astype(np.int64)}


class ReverseTask(Task):
    name = "reverse"
    Options = ReverseOptions

    def build_datasets(self, num_train_samples, num_val_samples):
        o, seed = self.options, self.cfg.train.seed
        val = ReverseDataset(num_val_samples, o.length, o.vocab, seed + 1) if num_val_samples else None
        return ReverseDataset(num_train_samples, o.length, o.vocab, seed), val

    def collate(self, samples):
        tokens = torch.as_tensor(np.stack([s["tokens"] for s in samples]))
        labels = tokens[:, 1:].clone()
        labels[:, : self.options.length] = -100  # the prompt and the separator are not trained
        return {"input_ids": tokens[:, :-1], "labels": labels}

    def loss(self, model, batch):
        _, loss_sum, count = next_token_loss(model, batch["input_ids"], batch["labels"])
        return loss_sum, count, {}


@hookimpl
def register_tasks(register):
    register("reverse", ReverseTask)
