"""The Task seam of the training driver: *what* is trained (torchtitan's train spec, Megatron's forward step).

A Task builds its datasets and collate from the config, computes `loss(model, batch) -> (loss_sum,
num_tokens, metrics)` summed over the units it trains on (unmasked tokens for language modelling, pairs for
DPO), says which parameters train and what a checkpoint keeps. The driver owns everything else: it divides
the summed loss by the step's global count over micro-batches and data-parallel ranks (Megatron's per-token
loss), so masked labels and uneven lengths weigh exactly as one forward over the whole batch would.

Tasks register on the plugin bus (`register_tasks(register)` -> `register(name, TaskClass)` or
`register(name, "module:Class")` for a torch-free registration); `train.task` names one, and the task's own
keys live in the config's `task:` section, parsed by the task's `Options` dataclass.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable

import torch

from ..config import from_dict
from .config import TrainConfig

#: metrics[name] = (sum, count): the driver sums both over micro-batches, ranks and the log interval and
#: logs sum / count, so a metric is a mean over whatever units the task counts (tokens, pairs, samples).
Metrics = dict[str, tuple[torch.Tensor, torch.Tensor]]


@dataclasses.dataclass
class NoOptions:
    """A task without keys of its own: any key in `task:` is an error naming it."""


class Task:
    """Base class with the defaults a language-modelling task needs; subclasses override what differs."""

    name = "task"
    Options: type = NoOptions
    #: rows of input_ids per sample in a padded micro-batch (DPO: a pair is a chosen and a rejected row); a
    #: pipeline's stages are built for micro_batch_size x rows_per_sample rows of data.seq_length tokens
    rows_per_sample: int = 1
    initialised_from: tuple[str, str] | None = None  # (path, "hf" | "native" | "mcore") when built from weights

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.options = from_dict(self.Options, cfg.task, prefix="task")

    # ---- data ----------------------------------------------------------------------------------------
    def build_datasets(self, num_train_samples: int, num_val_samples: int) -> tuple[Any, Any | None]:
        """(train, val or None): map-style datasets indexed by global sample position."""
        raise NotImplementedError

    def build_stage_datasets(self, data_path: Any, seq_length: int, num_train_samples: int,
                             num_val_samples: int, curriculum: dict | None = None) -> tuple[Any, Any | None]:
        """(train, val or None) for a stage of a run in stages (`stages.py`) that reads `data_path` (any blend
        form) at `seq_length`, its training samples in `curriculum` order when given. The default serves the
        run's own data (data.path, data.seq_length) through `build_datasets`; a task that can train on another
        blend, length or order per stage overrides this."""
        from ..errors import UserError

        d = self.cfg.data
        if data_path == d.path and seq_length == d.seq_length and curriculum is None:
            return self.build_datasets(num_train_samples, num_val_samples)
        raise UserError(f"task {self.cfg.train.task} trains on data.path at data.seq_length only; its stages "
                        "cannot set 'blend', 'seq_length' or 'curriculum'")

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return torch.utils.data.default_collate(samples)

    def metric_names(self) -> list[str]:
        """Every name `loss` may put in its metrics (the same on every rank: they are reduced packed)."""
        return []

    # ---- model ---------------------------------------------------------------------------------------
    def build_model(self, device: torch.device) -> torch.nn.Module:
        """The model to train, on `device`: the weights of `checkpoint.load` when set (Megatron's --load with
        --finetune; the config's model must match them), else initialised from the current RNG (a finetuning
        task loads its base weights here)."""
        from ..nn.build import build_model

        ck = self.cfg.checkpoint
        if not ck.load:
            return build_model(self.cfg.model, device=device, kernels=self.cfg.train.kernels)
        from .init_weights import check_same_model, load_initial_model, to_training_device

        loaded = load_initial_model(ck.load, ck.load_iteration)
        check_same_model(self.cfg.model, loaded.config, ck.load)
        self.initialised_from = (str(loaded.path), loaded.source)
        return to_training_device(loaded.model, device, self.cfg.train.kernels, self.cfg.model.vocab_rows)

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """Called once before parallelisation: freeze, add adapters, build a frozen reference."""
        return model

    def trainable_parameters(self, model: torch.nn.Module) -> Iterable[torch.nn.Parameter]:
        return (p for p in model.parameters() if p.requires_grad)

    def saved_state(self, model_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """What a checkpoint keeps of the (full, native-named) model state: all of it by default; a LoRA
        task keeps its adapters. A frozen reference model is never part of `model`, so never saved."""
        return model_state

    def load_saved_state(self, model: torch.nn.Module, state: dict[str, torch.Tensor],
                         load: Any) -> None:
        """Put `saved_state`'s output back; `load(model, state, strict)` is the parallelism's loader."""
        load(model, state, strict=True)

    def batch_tokens(self, batch: dict[str, Any]) -> int:
        """Tokens the model really reads in this micro-batch, padding excluded: the run log's tokens_per_s
        and MFU count these. Pretraining rows have no padding, so every input id; a task that pads says so."""
        return int(batch["input_ids"].numel())

    # ---- the loss ------------------------------------------------------------------------------------
    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]
             ) -> tuple[torch.Tensor, torch.Tensor, Metrics]:
        """(loss summed over trained units, number of those units, metrics) for one micro-batch."""
        raise NotImplementedError

    def loss_from_hidden(self, model: torch.nn.Module, hidden: torch.Tensor, batch: dict[str, torch.Tensor]
                         ) -> tuple[torch.Tensor, torch.Tensor, Metrics]:
        """`loss` from the final norm's output `hidden` [B, T, H] instead of the tokens: a pipeline's last
        stage runs the model only from its own first block (`model` holds the LM head and kernels). A task
        that can train with pipeline parallelism implements it."""
        from ..errors import UserError

        raise UserError(f"task {self.name} cannot train with pipeline parallelism (no loss_from_hidden)")


def head_loss(model: torch.nn.Module, hidden: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-token fp32 loss [B, T] of the LM head on final hidden states [B, T, H], as `model(tokens, labels)`
    computes it (through the model's cross_entropy kernel: never the whole logits, never the padded rows)."""
    flat = hidden.reshape(labels.numel(), hidden.shape[-1])
    return model.loss_of(flat, labels.reshape(-1)).view(labels.shape)


def next_token_loss(model: torch.nn.Module, tokens: torch.Tensor, labels: torch.Tensor,
                    **forward: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(per-token fp32 loss [B, T] with 0 on -100 labels, loss sum, number of trained tokens)."""
    per_token = model(tokens, labels, **forward)
    return per_token, per_token.sum(), (labels != -100).sum()
