"""The `sft` task: supervised finetuning on `llmctl data sft` output (MindSpeed's packed instruction files),
every weight or LoRA adapters (`task.lora`).

Batches, as MindSpeed builds them:
- unpacked samples are padded per micro-batch to the longest one (`--variable-seq-lengths`; with
  `task.variable_seq_lengths: false`, to data.seq_length); right padding under a causal mask never reaches a
  real token, and padded labels are -100;
- `--pack` rows are trained as they are (one sequence: attention crosses the packed samples, as in MindSpeed);
- `--neat-pack` rows carry segment ids 1, 2, 3, ... in attention_mask: the model gets those as `segment_ids`
  (block-diagonal causal attention) with positions restarting at 0 per sample, and a label that would be the
  next sample's first token is masked, so each sample trains exactly as it would alone.
The loss is summed over label != -100 tokens; the driver divides by the step's global count of them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from llmctl.core.train.task import Metrics, next_token_loss

from .base import FinetuneTask, pad_rows, padded_length
from .options import SFTOptions

IGNORE = -100


def segment_positions(segments: torch.Tensor) -> torch.Tensor:
    """Positions [B, T] that restart at 0 wherever the segment id changes."""
    B, T = segments.shape
    idx = torch.arange(T, device=segments.device).expand(B, T)
    start = torch.ones_like(segments, dtype=torch.bool)
    start[:, 1:] = segments[:, 1:] != segments[:, :-1]
    return idx - torch.where(start, idx, 0).cummax(dim=1).values


def collate_sft(samples: list[dict[str, Any]], pad_id: int, length: int) -> dict[str, torch.Tensor]:
    """input_ids / labels [B, length - 1] (labels shifted by one), plus segment_ids and positions when a row
    holds more than one neat-packed sample."""
    ids = pad_rows([s["input_ids"] for s in samples], length, pad_id)
    labels = pad_rows([s["labels"] for s in samples], length, IGNORE)
    mask = pad_rows([s.get("attention_mask", np.ones(len(s["input_ids"]), np.int64)) for s in samples], length, 0)
    batch = {"input_ids": ids[:, :-1], "labels": labels[:, 1:].clone()}
    if int(mask.max()) > 1:  # neat-packed: attention_mask holds segment ids
        seg = mask
        batch["labels"][seg[:, 1:] != seg[:, :-1]] = IGNORE  # never predict across a sample boundary
        batch["segment_ids"] = seg[:, :-1].contiguous()
        batch["positions"] = segment_positions(batch["segment_ids"])
    return batch


class SFTTask(FinetuneTask):
    name = "sft"
    Options = SFTOptions

    def build_datasets(self, num_train_samples: int, num_val_samples: int):
        train = self.build_split("sft", num_train_samples, "train")
        val = self.build_split("sft", num_val_samples, "val") if num_val_samples else None  # None: no PREFIX_val
        return train, val

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        seq = self.cfg.data.seq_length
        if self.options.variable_seq_lengths:
            longest = max(len(s["input_ids"]) for s in samples)
            length = padded_length(longest - 1, self.options.pad_to_multiple_of) + 1
            length = min(max(length, longest), max(seq, longest))
        else:
            length = max(seq, max(len(s["input_ids"]) for s in samples))
        return collate_sft(samples, self.pad_id, length)

    def loss(self, model, batch) -> tuple[torch.Tensor, torch.Tensor, Metrics]:
        extra = {k: batch[k] for k in ("segment_ids", "positions") if k in batch}
        _, loss_sum, n_tokens = next_token_loss(model, batch["input_ids"], batch["labels"], **extra)
        return loss_sum, n_tokens, {}
