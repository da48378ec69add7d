"""The `dpo` task: Direct Preference Optimization on preference pairs (`llmctl data sft` with a *Pairwise
handler), every weight or LoRA adapters. The loss unit is a pair: the driver divides by the step's pairs.

Losses (logits = (pi_c - ref_c) - (pi_r - ref_r), log-probs summed over each answer's trained tokens):
  sigmoid  -(1 - ls) logsigmoid(beta * logits) - ls logsigmoid(-beta * logits)   (cDPO label smoothing ls)
  hinge    relu(1 - beta * logits)                                                 (SLiC)
  ipo      (logits_avg - 1 / (2 beta))^2, logits_avg from per-token averaged log-ratios (TRL's IPO)
Rewards: beta * (pi - ref) per answer. Metrics carry TRL's names (rewards/chosen, ..., logps/rejected).

Reference: a frozen copy of the base (LoRA: the same model with adapters disabled), or `reference:
precomputed`: every pair's reference log-probs computed once before training and the copy dropped. That
happens at the driver's `on_train_start` (llmctl-finetune's callback), not in `prepare`, because only then is
the parallelism known: each data-parallel rank computes its share of the pairs and the shares are summed
over ranks, so every rank holds the whole [pairs, 2] table (8 bytes a pair) for 1/dp of the forwards.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from llmctl.core.errors import UserError
from llmctl.core.train.task import Metrics, head_loss

from .base import FinetuneTask
from .batching import (degree, documents_batch, model_inputs, padded_batch, padded_row_length, pair_pieces,
                       sequence_multiple, shifted, use_padding_free)
from .lora import adapters_disabled
from .options import DPOOptions

IGNORE = -100
METRICS = ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins",
           "logps/chosen", "logps/rejected")


def dpo_loss(policy_chosen: torch.Tensor, policy_rejected: torch.Tensor, ref_chosen: torch.Tensor,
             ref_rejected: torch.Tensor, *, beta: float, loss_type: str = "sigmoid", label_smoothing: float = 0.0,
             chosen_tokens: torch.Tensor | None = None, rejected_tokens: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(per-pair losses, chosen rewards, rejected rewards) from summed answer log-probs [N]; IPO needs the
    answers' token counts."""
    chosen_ratio, rejected_ratio = policy_chosen - ref_chosen, policy_rejected - ref_rejected
    if loss_type == "ipo":
        logits = chosen_ratio / chosen_tokens.clamp_min(1) - rejected_ratio / rejected_tokens.clamp_min(1)
        losses = (logits - 1 / (2 * beta)) ** 2
    else:
        logits = chosen_ratio - rejected_ratio
        if loss_type == "sigmoid":
            losses = (-F.logsigmoid(beta * logits) * (1 - label_smoothing)
                      - F.logsigmoid(-beta * logits) * label_smoothing)
        elif loss_type == "hinge":
            losses = torch.relu(1 - beta * logits)
        else:
            raise ValueError(f"unknown DPO loss_type {loss_type!r}")
    return losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()


def answer_logps(model, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed log-prob of each answer's trained tokens [2B], their count [2B]): per document of a
    padding-free row, or per padded row."""
    labels = batch["labels"]
    per_token = model(batch["input_ids"], labels, **model_inputs(batch))  # -log p, 0 where the label is -100
    if "document_index" not in batch:
        return -per_token.sum(1), (labels != IGNORE).sum(1)
    index, n = batch["document_index"], batch["answer_tokens"].shape[0]
    sums = per_token.new_zeros(n + 1).index_add_(0, index, per_token[0])  # bin n: the row's padding
    return -sums[:n], batch["answer_tokens"]


class _WithIndex(torch.utils.data.Dataset):
    """Samples plus the position of their pair in the underlying files (the key of precomputed log-probs)."""

    def __init__(self, ds):
        self.ds, self.ref = ds, None

    def __len__(self) -> int:
        return len(self.ds)

    def base_index(self, i: int) -> int:
        return int(self.ds.index(i)) if hasattr(self.ds, "index") else int(i)

    def __getitem__(self, i: int) -> dict[str, Any]:
        sample = dict(self.ds[i])
        if self.ref is not None:
            sample["ref_logps"] = self.ref[self.base_index(i)]
        return sample


class DPOTask(FinetuneTask):
    name = "dpo"
    Options = DPOOptions
    rows_per_sample = 2  # a pair: its chosen and its rejected row

    def check_layout(self, parallel: dict) -> None:
        pp = degree(parallel, "pp")
        if pp > 1 and self.options.reference != "precomputed":
            raise UserError(f"parallel.pp {pp}: dpo's reference pass cannot run inside the policy's pipeline "
                            "step; set task.reference precomputed (one pass through the pipeline before "
                            "training)")

    def build_datasets(self, num_train_samples: int, num_val_samples: int):
        train = _WithIndex(self.build_split("dpo", num_train_samples, "train"))
        val = self.build_split("dpo", num_val_samples, "val") if num_val_samples else None
        val = _WithIndex(val) if val is not None else None
        self.splits = [s for s in (train, val) if s is not None]
        return train, val

    def metric_names(self) -> list[str]:
        return list(METRICS)

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        """Answers [chosen_0..chosen_{B-1}, rejected_0..rejected_{B-1}] (the order of `answer_logps`): per
        pair a shared prompt and two answers continuing it in one padding-free row (`document_index` maps
        tokens to answers), or rows padded to the longest (+1 for the shift)."""
        answers = ([(s["chosen_input_ids"], s["chosen_labels"]) for s in samples]
                   + [(s["rejected_input_ids"], s["rejected_labels"]) for s in samples])
        o, parallel = self.options, self.cfg.parallel
        if use_padding_free(o.padding_free, parallel):
            n, pieces = len(samples), []
            for i in range(n):
                if o.share_prompt:  # the prompt once, both answers continuing it
                    pieces += pair_pieces(answers[i], answers[n + i], (i, n + i), first=len(pieces))
                else:
                    pieces += [shifted(*answers[i], owner=i), shifted(*answers[n + i], owner=n + i)]
            batch = documents_batch(pieces, self.pad_id, sequence_multiple(o.pad_to_multiple_of, parallel),
                                    owners=2 * n)
            batch["answer_tokens"] = torch.tensor([int((np.asarray(lab[1:]) != IGNORE).sum()) for _, lab in answers])
        else:
            longest = max(len(ids) for ids, _ in answers)
            batch = padded_batch(answers, self.pad_id, padded_row_length(
                longest, self.cfg.data.seq_length, o.pad_to_multiple_of, parallel))
        if "ref_logps" in samples[0]:
            batch["ref_logps"] = torch.stack([torch.as_tensor(s["ref_logps"]) for s in samples]).float()
        return batch

    # ---- model ---------------------------------------------------------------------------------------
    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        self.reference = None
        if self.lora is None:  # a frozen copy of the base, outside `model`: never trained, never saved
            self.reference = copy.deepcopy(model).eval().requires_grad_(False)
        model = super().prepare(model)
        self.policy = model  # unwrapped: the LoRA reference pass calls it with adapters disabled
        self.pending_reference = self.options.reference == "precomputed"
        return model

    def on_train_start(self, trainer: Any) -> None:
        """Before the first step (driver callback): the notes, and the precomputed reference log-probs,
        after which the frozen copy is dropped."""
        super().on_train_start(trainer)
        if self.pending_reference:
            for split in self.splits:
                split.ref = self._precompute(split, trainer.par, trainer.device, trainer.module)
            self.reference, self.pending_reference = None, False

    @torch.no_grad()
    def _reference_logps(self, batch: dict[str, Any], policy: torch.nn.Module | None = None) -> torch.Tensor:
        """The frozen copy's answer log-probs, or (LoRA) `policy`'s — the trained model, parallelised or not,
        by default the unwrapped one — with its adapters disabled."""
        if self.reference is not None:
            return answer_logps(self.reference, batch)[0]
        was_training = self.policy.training
        self.policy.eval()  # no adapter dropout in the reference pass
        try:
            with adapters_disabled(self.policy):
                return answer_logps(policy if policy is not None else self.policy, batch)[0]
        finally:
            self.policy.train(was_training)

    @torch.no_grad()
    def _precompute(self, split: _WithIndex, par: Any, device: torch.device, model: torch.nn.Module | None = None
                    ) -> torch.Tensor:
        """[pairs, 2] reference log-probs (chosen, rejected) of every pair in the split's files. This
        data-parallel rank computes a contiguous share; `par.sum_over_dp` adds the others' (zeros elsewhere).
        Every rank runs the same number of forwards of micro_batch_size pairs (a short or empty share repeats
        pair 0, discarded): the forward of a sharded model (FSDP2, TP, a pipeline's stages) is a collective,
        and a pipeline's stages take micro-batches of one shape. The LoRA reference is `model` (the trained
        model as the strategy wrapped it: under PP, a pass through every stage) with adapters disabled."""
        base = getattr(split.ds, "base", split.ds)
        n, batch_size = len(base), self.cfg.train.micro_batch_size
        share = -(-n // par.dp_size)
        lo, hi = min(n, par.dp_rank * share), min(n, (par.dp_rank + 1) * share)
        out = torch.zeros(n, 2, device=device)
        for start in range(lo, lo + share, batch_size):
            idx = list(range(start, min(hi, start + batch_size)))
            rows = [base[i] for i in idx + [0] * (batch_size - len(idx))]
            b = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in self.collate(rows).items()}
            logps = self._reference_logps(b, model).float()
            if idx:
                out[idx[0]:idx[-1] + 1] = torch.stack([logps[:len(idx)], logps[batch_size:batch_size + len(idx)]], 1)
        return par.sum_over_dp(out).cpu()

    # ---- the loss ------------------------------------------------------------------------------------
    def loss(self, model, batch) -> tuple[torch.Tensor, torch.Tensor, Metrics]:
        logps, counts = answer_logps(model, batch)
        return self._pair_losses(logps, counts, batch)

    def loss_from_hidden(self, model, hidden, batch) -> tuple[torch.Tensor, torch.Tensor, Metrics]:
        """The last pipeline stage's loss from the final hidden states of padded rows (the reference
        log-probs are precomputed: `check_layout`)."""
        labels = batch["labels"]
        return self._pair_losses(-head_loss(model, hidden, labels).sum(1), (labels != IGNORE).sum(1), batch)

    def _pair_losses(self, logps: torch.Tensor, counts: torch.Tensor, batch) -> tuple[torch.Tensor, torch.Tensor,
                                                                                      Metrics]:
        """(summed pair losses, pairs, TRL's metrics) from the answers' log-probs [chosen..., rejected...]."""
        n = logps.shape[0] // 2
        if "ref_logps" in batch:
            ref = batch["ref_logps"].to(logps.device)
            ref_c, ref_r = ref[:, 0], ref[:, 1]
        elif self.options.reference == "precomputed":
            raise RuntimeError("dpo: reference log-probs were never precomputed (llmctl-finetune's "
                               "on_train_start callback did not run)")
        else:
            ref_all = self._reference_logps(batch).float()
            ref_c, ref_r = ref_all[:n], ref_all[n:]
        o = self.options
        losses, chosen_r, rejected_r = dpo_loss(
            logps[:n], logps[n:], ref_c, ref_r, beta=o.beta, loss_type=o.loss_type,
            label_smoothing=o.label_smoothing, chosen_tokens=counts[:n], rejected_tokens=counts[n:])
        pairs = torch.tensor(float(n), device=losses.device)
        metrics: Metrics = {
            "rewards/chosen": (chosen_r.sum(), pairs), "rewards/rejected": (rejected_r.sum(), pairs),
            "rewards/accuracies": ((chosen_r > rejected_r).float().sum(), pairs),
            "rewards/margins": ((chosen_r - rejected_r).sum(), pairs),
            "logps/chosen": (logps[:n].detach().sum(), pairs), "logps/rejected": (logps[n:].detach().sum(), pairs),
        }
        return losses.sum(), pairs, metrics
