"""Start training from existing weights: Megatron's `--load DIR --finetune` (weights only; the optimizer,
LR schedule and iteration start fresh), for any source `load_model` reads — an HF dir, a llmctl checkpoint
or a megatron-core / MindSpeed checkpoint (its distributed-optimizer state is not needed).

One path for both users: pretraining's `checkpoint.load` (the config's model section must describe the
checkpoint's model) and finetuning's `task.base` (the model section is taken from the base).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch

from ..config import to_dict
from ..errors import UserError
from ..model_config import VOCAB_LAYOUT_FIELDS, ModelConfig

#: ModelConfig fields that do not describe the weights (how a random init would draw them, how the
#: vocabulary rows are padded: a run pads for its own TP).
_NOT_IN_WEIGHTS = ("init_std", *VOCAB_LAYOUT_FIELDS)


def load_initial_model(path: str | os.PathLike, iteration: int | None = None):
    """The checkpoint's model on the CPU in fp32 (`LoadedModel`: model, tokenizer, config, source, path);
    moved to the training device by `to_training_device`."""
    from ..nn.loading import load_model

    return load_model(path, device="cpu", dtype=torch.float32, iteration=iteration)


def check_same_model(configured: ModelConfig, loaded: ModelConfig, source: Any) -> None:
    """One line naming the first model key in which the config and the checkpoint differ."""
    ours, theirs = to_dict(configured), to_dict(loaded)
    for field in dataclasses.fields(ModelConfig):
        key = field.name
        if key not in _NOT_IN_WEIGHTS and ours.get(key) != theirs.get(key):
            raise UserError(f"{source}: checkpoint has model.{key}={theirs.get(key)!r} but the config has "
                            f"{ours.get(key)!r}; checkpoint.load needs the config's model to match it")


def to_training_device(model: torch.nn.Module, device: torch.device, kernels: dict | None,
                       vocab_rows: int | None = None) -> torch.nn.Module:
    """A loaded model on the training device, with that device's kernels, in train mode; `vocab_rows`: the
    run's padded vocabulary (model.padded_vocab_size for its TP), the checkpoint's padding re-made to it."""
    from ..nn.build import with_vocab_rows
    from ..nn.kernels import select_kernels

    if vocab_rows is not None:
        model = with_vocab_rows(model, vocab_rows)
    model = model.to(device)
    model.set_kernels(select_kernels(device.type, kernels))
    return model.train()
