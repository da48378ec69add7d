"""HF / native <-> Megatron-core checkpoint conversion (the course's hf2mcore and mcore2hf).

Every direction reads the whole source into one native state dict (llmctl names), then writes the target
under a temp name that is renamed only when complete. The tokenizer travels with the weights: into
`iter_N/tokenizer/` of an mcore checkpoint (MindSpeed ignores it), and out again to HF or native.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Sequence

import torch

from ..config import to_dict
from ..errors import UserError
from ..io import atomic_dir
from ..tokenizer import find_tokenizer_dir, load_tokenizer
from .checkpoint import save_checkpoint
from .convert import _check_out_dir, write_hf_dir
from .loading import read_hf_state, read_native_state
from .mcore import check_split, layer_counts
from .mcore_io import read_mcore_state, save_mcore_checkpoint


def _check_target(cfg, tp: int, pp: int, num_layer_list: Any) -> None:
    check_split(cfg, tp, pp)
    layer_counts(cfg.num_layers, pp, num_layer_list)


def _write_mcore(out_dir: Path, state, cfg, tp, pp, num_layer_list, tok_dir, iteration, extra_args=None) -> Path:
    with atomic_dir(out_dir) as tmp:  # the whole checkpoint root appears at once
        save_mcore_checkpoint(tmp, iteration, state, cfg, tp, pp, num_layer_list, tokenizer_dir=tok_dir,
                              extra_args=extra_args)
    return out_dir / f"iter_{iteration:07d}"


def pad_vocab(cfg, state: dict[str, torch.Tensor], padded: int | None):
    """(cfg, state, extra args) with the embedding / output rows zero-padded to `padded` (MindSpeed's
    --padded-vocab-size, e.g. so TP divides the vocabulary); the true size is kept as args.vocab_size."""
    if padded is None or padded == cfg.vocab_size:
        return cfg, state, None
    if padded < cfg.vocab_size:
        raise UserError(f"--padded-vocab-size {padded} is smaller than the model's vocabulary ({cfg.vocab_size})")
    for name in ("embed.weight", "lm_head.weight"):
        t = state.get(name)
        if t is not None and not (name == "lm_head.weight" and cfg.tie_embeddings):
            state[name] = torch.cat([t, t.new_zeros(padded - t.shape[0], *t.shape[1:])])
    return dataclasses.replace(cfg, vocab_size=padded), state, {"vocab_size": cfg.vocab_size}


def unpad_vocab(cfg, state: dict[str, torch.Tensor], info: dict[str, Any], tok_dir: Path | None):
    """(cfg, state) without the rows a padded vocabulary added: beyond args.vocab_size (what hf-to-mcore and
    Megatron's --vocab-size record), never below the tokenizer shipped with the weights."""
    target = info.get("vocab_size")
    if not target or target >= cfg.vocab_size:
        return cfg, state
    if tok_dir is not None:
        target = max(int(target), load_tokenizer(tok_dir).vocab_size)
    for name in ("embed.weight", "lm_head.weight"):
        if name in state:
            state[name] = state[name][:target]
    return dataclasses.replace(cfg, vocab_size=int(target)), state


def hf_to_mcore(hf_dir: str | os.PathLike, out_dir: str | os.PathLike, *, tp: int = 1, pp: int = 1,
                num_layer_list: Sequence[int] | str | None = None, iteration: int = 1,
                padded_vocab_size: int | None = None, overwrite: bool = False) -> Path:
    """An HF llama/qwen2 dir as a MindSpeed-style megatron-core checkpoint at `iteration` (MindSpeed's hf2mcore
    writes iteration 1), the vocabulary zero-padded to `padded_vocab_size` if given. Returns the iteration
    directory."""
    hf_dir, out_dir = Path(hf_dir), Path(out_dir)
    cfg, state = read_hf_state(hf_dir)
    cfg, state, extra = pad_vocab(cfg, state, padded_vocab_size)
    _check_target(cfg, tp, pp, num_layer_list)
    _check_out_dir(out_dir, hf_dir, overwrite)
    return _write_mcore(out_dir, state, cfg, tp, pp, num_layer_list, find_tokenizer_dir(hf_dir), iteration, extra)


def native_to_mcore(ckpt_dir: str | os.PathLike, out_dir: str | os.PathLike, *, tp: int = 1, pp: int = 1,
                    num_layer_list: Sequence[int] | str | None = None, iteration: int | None = None,
                    overwrite: bool = False) -> Path:
    """A llmctl checkpoint's weights as a megatron-core checkpoint at the same iteration."""
    ckpt_dir, out_dir = Path(ckpt_dir), Path(out_dir)
    cfg, state, it_dir = read_native_state(ckpt_dir, iteration)
    _check_target(cfg, tp, pp, num_layer_list)
    _check_out_dir(out_dir, ckpt_dir, overwrite)
    it = int(it_dir.name.removeprefix("iter_"))
    return _write_mcore(out_dir, state, cfg, tp, pp, num_layer_list, find_tokenizer_dir(it_dir / "tokenizer"), it)


def _mcore_tokenizer(it_dir: Path, tokenizer: str | os.PathLike | None) -> Path | None:
    if tokenizer is not None:
        found = find_tokenizer_dir(tokenizer)
        if found is None:
            raise UserError(f"--tokenizer {tokenizer}: no tokenizer files there")
        return found
    return find_tokenizer_dir(it_dir / "tokenizer") or find_tokenizer_dir(it_dir.parent / "tokenizer")


def mcore_to_hf(ckpt_dir: str | os.PathLike, out_dir: str | os.PathLike, *, iteration: int | None = None,
                tokenizer: str | os.PathLike | None = None, dtype: str | None = None,
                overwrite: bool = False) -> tuple[Path, dict[str, Any]]:
    """A megatron-core checkpoint (any TP x PP) as an HF dir. Returns (out_dir, info about the source)."""
    ckpt_dir, out_dir = Path(ckpt_dir), Path(out_dir)
    cfg, state, it_dir, info = read_mcore_state(ckpt_dir, iteration)
    _check_out_dir(out_dir, ckpt_dir, overwrite)
    tok_dir = _mcore_tokenizer(it_dir, tokenizer)
    cfg, state = unpad_vocab(cfg, state, info, tok_dir)
    return write_hf_dir(cfg, state, out_dir, tok_dir, source=str(it_dir), dtype=dtype), info


def mcore_to_native(ckpt_dir: str | os.PathLike, out_dir: str | os.PathLike, *, iteration: int | None = None,
                    tokenizer: str | os.PathLike | None = None,
                    overwrite: bool = False) -> tuple[Path, dict[str, Any]]:
    """A megatron-core checkpoint as a llmctl checkpoint at the same iteration (0 for a `release` one)."""
    ckpt_dir, out_dir = Path(ckpt_dir), Path(out_dir)
    cfg, state, it_dir, info = read_mcore_state(ckpt_dir, iteration)
    _check_out_dir(out_dir, ckpt_dir, overwrite)
    it = int(it_dir.name.removeprefix("iter_")) if it_dir.name.startswith("iter_") else 0
    tok_dir = _mcore_tokenizer(it_dir, tokenizer)
    cfg, state = unpad_vocab(cfg, state, info, tok_dir)
    if cfg.tie_embeddings:
        state["lm_head.weight"] = state["embed.weight"]
    with atomic_dir(out_dir) as tmp:
        final = save_checkpoint(tmp, it, {"model": state}, {"model": to_dict(cfg)}, tokenizer_dir=tok_dir)
    return out_dir / final.name, info
