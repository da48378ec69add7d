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
from ..model_config import pad_vocab_size
from ..tokenizer import find_tokenizer_dir, load_tokenizer
from .build import fit_vocab_state
from .checkpoint import save_checkpoint
from .convert import _check_out_dir, padded_native, write_hf_dir
from .loading import read_hf_state, read_native_state
from .mcore import check_split, layer_counts
from .mcore_io import read_mcore_state, save_mcore_checkpoint


def _check_target(cfg, tp: int, pp: int, num_layer_list: Any) -> None:
    check_split(cfg, tp, pp)
    layer_counts(cfg.num_layers, pp, num_layer_list)


def _write_mcore(out_dir: Path, state, cfg, tp, pp, num_layer_list, tok_dir, iteration) -> Path:
    with atomic_dir(out_dir) as tmp:  # the whole checkpoint root appears at once
        save_mcore_checkpoint(tmp, iteration, state, cfg, tp, pp, num_layer_list, tokenizer_dir=tok_dir)
    return out_dir / f"iter_{iteration:07d}"


def pad_vocab(cfg, state: dict[str, torch.Tensor], tp: int, padded: int | None = None,
              divisible_by: int | None = None):
    """(cfg, state) with the embedding / output rows as Megatron pads them: `padded` (MindSpeed's
    --padded-vocab-size) if given, else the vocabulary rounded up to a multiple of `divisible_by` x `tp`
    (--make-vocab-size-divisible-by; default 1, no padding, as MindSpeed's converter). The added rows are
    zero; the true size goes into args.vocab_size, so mcore-to-hf drops them again."""
    divisible_by = divisible_by or 1
    rows = padded if padded is not None else pad_vocab_size(cfg.vocab_size, divisible_by, tp)
    if rows < cfg.vocab_size:
        raise UserError(f"--padded-vocab-size {rows} is smaller than the model's vocabulary ({cfg.vocab_size})")
    cfg = dataclasses.replace(cfg, make_vocab_size_divisible_by=divisible_by, padded_vocab_size=rows)
    return cfg, fit_vocab_state(state, cfg, "hf-to-mcore")


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
                padded_vocab_size: int | None = None, make_vocab_size_divisible_by: int | None = None,
                overwrite: bool = False) -> Path:
    """An HF llama/qwen2 dir as a MindSpeed-style megatron-core checkpoint at `iteration` (MindSpeed's hf2mcore
    writes iteration 1), the vocabulary zero-padded as Megatron pads it (`pad_vocab`). Returns the iteration
    directory."""
    hf_dir, out_dir = Path(hf_dir), Path(out_dir)
    cfg, state = read_hf_state(hf_dir)
    cfg, state = pad_vocab(cfg, state, tp, padded_vocab_size, make_vocab_size_divisible_by)
    _check_target(cfg, tp, pp, num_layer_list)
    _check_out_dir(out_dir, hf_dir, overwrite)
    return _write_mcore(out_dir, state, cfg, tp, pp, num_layer_list, find_tokenizer_dir(hf_dir), iteration)


def native_to_mcore(ckpt_dir: str | os.PathLike, out_dir: str | os.PathLike, *, tp: int = 1, pp: int = 1,
                    num_layer_list: Sequence[int] | str | None = None, iteration: int | None = None,
                    overwrite: bool = False) -> Path:
    """A llmctl checkpoint's weights as a megatron-core checkpoint at the same iteration, its vocabulary padded
    for `tp` as MindSpeed pads it with the checkpoint's make_vocab_size_divisible_by."""
    ckpt_dir, out_dir = Path(ckpt_dir), Path(out_dir)
    cfg, state, it_dir = read_native_state(ckpt_dir, iteration)
    cfg = dataclasses.replace(cfg, padded_vocab_size=cfg.padded_for(tp))
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
    cfg, state = padded_native(*unpad_vocab(cfg, state, info, tok_dir))
    with atomic_dir(out_dir) as tmp:
        final = save_checkpoint(tmp, it, {"model": state}, {"model": to_dict(cfg)}, tokenizer_dir=tok_dir)
    return out_dir / final.name, info
