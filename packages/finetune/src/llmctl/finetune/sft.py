"""The `sft` task: supervised finetuning on `llmctl data sft` output (MindSpeed's packed instruction files),
every weight or LoRA adapters (`task.lora`).

Batches (`batching`): padding-free by default — the micro-batch's samples end to end in one row, each
attending only to itself; or padded rows as MindSpeed builds them (`task.padding_free: false`, and under
context or pipeline parallelism): each micro-batch padded to its longest sample (`--variable-seq-lengths`; with
`task.variable_seq_lengths: false`, to data.seq_length). `--neat-pack` rows (segment ids in attention_mask)
train each segment as its own sample: as documents of the padding-free row, or under context or pipeline
parallelism as documents inside each data.seq_length row; `--pack` rows are trained as one
sequence each (attention crosses the packed samples, as in MindSpeed).

The loss is summed over label != -100 tokens; the driver divides by the step's global count of them.
"""

from __future__ import annotations

from typing import Any

import torch

from llmctl.core.errors import UserError
from llmctl.core.train.task import Metrics, head_loss, next_token_loss

from .base import FinetuneTask
from .batching import (document_rows, documents_batch, has_segments, model_inputs, padded_batch,
                       needs_rows, padded_row_length, sample_documents, sequence_multiple, shifted,
                       use_padding_free)
from .options import SFTOptions


class SFTTask(FinetuneTask):
    name = "sft"
    Options = SFTOptions

    def build_datasets(self, num_train_samples: int, num_val_samples: int):
        train = self.build_split("sft", num_train_samples, "train")
        val = self.build_split("sft", num_val_samples, "val") if num_val_samples else None  # None: no PREFIX_val
        return train, val

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        o, parallel = self.options, self.cfg.parallel
        rows = [[shifted(*doc) for doc in sample_documents(s)] for s in samples]  # each sample's documents
        if use_padding_free(o.padding_free, parallel):
            pieces = [piece for row in rows for piece in row]
            return documents_batch(pieces, self.pad_id, sequence_multiple(o.pad_to_multiple_of, parallel))
        if any(has_segments(s) for s in samples):
            if needs_rows(parallel):  # PP/CP: one row per neat-packed sample, its segments documents inside
                return document_rows(rows, self.pad_id, self.cfg.data.seq_length)
            raise UserError("neat-packed data (segment ids in attention_mask) trains each segment as a sample "
                            "of its own, as documents of a padding-free row: set task.padding_free true")
        longest = max(len(s["input_ids"]) for s in samples)
        length = padded_row_length(longest, self.cfg.data.seq_length, o.pad_to_multiple_of, parallel,
                                   o.variable_seq_lengths)
        return padded_batch([(s["input_ids"], s["labels"]) for s in samples], self.pad_id, length)

    def loss(self, model, batch) -> tuple[torch.Tensor, torch.Tensor, Metrics]:
        _, loss_sum, n_tokens = next_token_loss(model, batch["input_ids"], batch["labels"], **model_inputs(batch))
        return loss_sum, n_tokens, {}

    def loss_from_hidden(self, model, hidden, batch) -> tuple[torch.Tensor, torch.Tensor, Metrics]:
        """The last pipeline stage's loss, from the final norm's hidden states of a padded micro-batch."""
        labels = batch["labels"]
        return head_loss(model, hidden, labels).sum(), (labels != -100).sum(), {}
