"""The one way a `Transformer` comes into being: for training (random init), for loading a checkpoint or an
HF directory, for generate, eval and convert. Also the one dtype parser and the one missing/unexpected-key
check, so every path refuses a checkpoint that does not describe the model in the same words.

The vocabulary rows of a state are fitted to the model being built (`fit_vocab_rows`): a checkpoint saved at
one tensor-parallel size (padded to 128 x TP rows) loads into a model padded for another, an HF model's own
rows load into a padded llmctl model and back. The real rows move unchanged; the padding is re-made.

Activation checkpointing is applied here from outside the model (torch's checkpoint wrapper around each
block, as torchtitan does), so `model.py` stays free of training switches.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from ..errors import UserError
from ..model_config import ModelConfig
from .model import Transformer, rope_inv_freq

DTYPES = {
    "fp32": torch.float32, "float32": torch.float32, "float": torch.float32,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16, "half": torch.float16,
}
#: Prefixes wrappers add to state-dict names (torch.compile, DDP, the activation-checkpoint wrapper).
WRAPPER_PREFIXES = ("_orig_mod.", "module.", "_checkpoint_wrapped_module.")
#: The parameters with one row per vocabulary id (padded to the model's vocab_rows).
VOCAB_PARAMS = ("embed.weight", "lm_head.weight")


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """torch dtype from a CLI/config spelling ("bf16", "float32", ...)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if str(dtype).lower() not in DTYPES:
        raise UserError(f"unknown dtype '{dtype}'; use one of fp32, bf16, fp16")
    return DTYPES[str(dtype).lower()]


def build_model(cfg: ModelConfig, state: dict[str, torch.Tensor] | None = None, *,
                device: torch.device | str = "cpu", dtype: str | torch.dtype = torch.float32,
                kernels: dict[str, str] | None = None, source: str = "checkpoint") -> Transformer:
    """A Transformer on `device` in `dtype` with the kernels chosen for that device (`kernels` overrides
    op -> backend). `state` (native names, wrapper prefixes allowed) is checked strictly and loaded without
    paying for a random init; without it the weights are initialised from torch's current RNG."""
    from .kernels import select_kernels

    device = torch.device(device)
    ops = select_kernels(device.type, kernels)
    if state is None:  # initialised on the CPU whatever the device: the same seed gives the same weights
        return Transformer(cfg, ops).to(device=device, dtype=parse_dtype(dtype))
    state = strip_wrappers(state)
    if cfg.tie_embeddings:
        state.setdefault("lm_head.weight", state.get("embed.weight"))
    state = fit_vocab_state(state, cfg, source)
    with torch.device("meta"):
        model = Transformer(cfg, ops)
    check_keys(set(model.state_dict()), {k for k, v in state.items() if v is not None}, source)
    model.load_state_dict(state, strict=True, assign=True)
    if cfg.tie_embeddings:
        model.lm_head.weight = model.embed.weight
    model.inv_freq = rope_inv_freq(cfg)  # the one non-persistent buffer, still on meta
    return model.to(device=device, dtype=parse_dtype(dtype))


def fit_vocab_rows(t: torch.Tensor, vocab_size: int, rows: int, what: str = "weight") -> torch.Tensor:
    """`t` [R, ...] with `rows` rows: its first `vocab_size` (the real ids) kept, the padding after them zero.
    `t` itself when it already has `rows` rows; a UserError when it cannot hold `vocab_size`."""
    if t.shape[0] == rows:
        return t
    if t.shape[0] < vocab_size:
        raise UserError(f"{what}: {t.shape[0]} vocabulary rows cannot hold model.vocab_size {vocab_size}")
    out = t.new_zeros((rows, *t.shape[1:]))
    out[:vocab_size] = t[:vocab_size]
    return out


def fit_vocab_state(state: dict[str, Any], cfg: ModelConfig, source: str = "checkpoint") -> dict[str, Any]:
    """`state` (native names) with its vocabulary weights fitted to `cfg.vocab_rows` rows."""
    state = dict(state)
    for name in VOCAB_PARAMS:
        if isinstance(state.get(name), torch.Tensor):
            state[name] = fit_vocab_rows(state[name], cfg.vocab_size, cfg.vocab_rows, f"{source}: {name}")
    return state


def with_vocab_rows(model: Transformer, rows: int) -> Transformer:
    """`model` laid out with `rows` vocabulary rows (a run's padded size for its TP): the same module when it
    has them, else a copy with the real rows kept and the padding re-made (same device, dtype, kernels)."""
    if model.embed.weight.shape[0] == rows:
        return model
    cfg = dataclasses.replace(model.cfg, padded_vocab_size=rows)
    param = model.embed.weight
    rebuilt = build_model(cfg, model.state_dict(), device=param.device, dtype=param.dtype)
    rebuilt.set_kernels(model.ops)
    return rebuilt.train(model.training)


def check_keys(expected: set[str], found: set[str], source: str) -> None:
    """One line naming the first few missing or unexpected weights."""
    for what, names, hint in (("missing", expected - found, ""),
                              ("unexpected", found - expected, " (config does not describe this checkpoint)")):
        if names:
            names = sorted(names)
            more = f" (+{len(names) - 5} more)" if len(names) > 5 else ""
            raise UserError(f"{source}: {what} weights {', '.join(names[:5])}{more}{hint}")


def strip_wrappers(state: dict[str, Any]) -> dict[str, Any]:
    """Native names from a state dict saved through torch.compile / DDP / checkpoint wrappers."""
    out = {}
    for key, value in state.items():
        for prefix in WRAPPER_PREFIXES:
            key = key.replace(prefix, "")
        out[key] = value
    return out


def apply_activation_checkpointing(model: Transformer) -> Transformer:
    """Recompute each block's activations in backward instead of storing them (memory for ~30% compute).
    The wrapper's state-dict hooks keep native names, so checkpoints do not change."""
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    for i, block in enumerate(model.layers):
        model.layers[i] = checkpoint_wrapper(block, preserve_rng_state=False)
    return model
