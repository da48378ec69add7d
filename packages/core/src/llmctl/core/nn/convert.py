"""HF <-> native checkpoint conversion. Weight names come from the family's adapter (hf_adapters); the
tokenizer travels with the weights both ways, so either side runs generate/eval/chat from its directory alone.

Both directions read everything first and write the output directory under a temp name, renamed only when
complete: an interrupted conversion leaves no half-written model behind. A native checkpoint holds its
vocabulary padded (`padded_vocab_size` rows, recorded in config.yaml); an HF dir holds `vocab_size` rows,
the model's own (the tokenizer's for a model llmctl pretrained): the padding is dropped on export.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch

from .checkpoint import save_checkpoint
from ..config import to_dict
from ..errors import UserError
from .hf_adapters import adapter_for
from ..io import atomic_dir, write_json_atomic
from .build import VOCAB_PARAMS, fit_vocab_state, parse_dtype, strip_wrappers
from .loading import read_hf_state, read_native_state
from ..tokenizer import find_tokenizer_dir, has_tokenizer, load_tokenizer


def _check_out_dir(out_dir: Path, source: Path, overwrite: bool) -> None:
    out, src = out_dir.resolve(), source.resolve()
    if out == src or out in src.parents:
        raise UserError(f"--out-dir {out_dir} would replace the source {source}; pick another directory")
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out-dir {out_dir} exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise UserError(f"--out-dir {out_dir} is not empty (use --force to replace it)")


def hf_to_native(hf_dir: str | os.PathLike, out_dir: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write a native checkpoint at iteration 0 (config.yaml `model:` section + tokenizer/) from an HF dir.
    Weights keep their stored dtype. Returns the iteration directory."""
    hf_dir, out_dir = Path(hf_dir), Path(out_dir)
    cfg, state = read_hf_state(hf_dir)
    _check_out_dir(out_dir, hf_dir, overwrite)
    tok_dir = find_tokenizer_dir(hf_dir)
    cfg, state = padded_native(cfg, state)
    with atomic_dir(out_dir) as tmp:
        save_checkpoint(tmp, 0, {"model": state}, {"model": to_dict(cfg)}, tokenizer_dir=tok_dir)
        if tok_dir is not None and (hf_dir / "generation_config.json").is_file():
            # The HF model's stop ids (often several for instruct models) ride along with the tokenizer.
            (tmp / "iter_0000000" / "tokenizer" / "generation_config.json").write_bytes(
                (hf_dir / "generation_config.json").read_bytes()
            )
    return out_dir / "iter_0000000"


def padded_native(cfg, state: dict[str, torch.Tensor]):
    """(cfg, state) as a native checkpoint stores them: the vocabulary padded for TP 1 and its size recorded
    (`padded_vocab_size`), a tied head present as `model.state_dict()` holds it."""
    cfg = dataclasses.replace(cfg, padded_vocab_size=cfg.vocab_rows)
    state = fit_vocab_state(strip_wrappers(state), cfg)
    if cfg.tie_embeddings:
        state["lm_head.weight"] = state["embed.weight"]
    return cfg, state


def native_to_hf(
    ckpt_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    iteration: int | None = None,
    *,
    dtype: str | torch.dtype | None = None,
    overwrite: bool = False,
) -> Path:
    """Write config.json + model.safetensors (+ tokenizer files, generation_config.json) loadable by
    `transformers.AutoModelForCausalLM` / `AutoTokenizer`. Tied embeddings are stored once, as HF does."""

    ckpt_dir, out_dir = Path(ckpt_dir), Path(out_dir)
    cfg, state, it_dir = read_native_state(ckpt_dir, iteration)
    _check_out_dir(out_dir, ckpt_dir, overwrite)
    return write_hf_dir(cfg, state, out_dir, it_dir / "tokenizer", source=str(it_dir), dtype=dtype)


def write_hf_dir(cfg, state: dict[str, torch.Tensor], out_dir: Path, tok_dir: Path | None, *, source: str,
                 dtype: str | torch.dtype | None = None) -> Path:
    """Write a native state dict (+ the tokenizer in `tok_dir`, if any) as an HF dir; shared by every export."""
    from safetensors.torch import save_file

    adapter = adapter_for(cfg)
    names = adapter.name_map(cfg)
    state = strip_wrappers(state)
    missing = [n for n in names if n not in state]
    unexpected = [n for n in state if n not in names and not (n == "lm_head.weight" and cfg.tie_embeddings)]
    if missing or unexpected:
        what = (
            f"missing weights {', '.join(missing[:5])}"
            if missing
            else f"unexpected weights {', '.join(unexpected[:5])}"
        )
        raise UserError(f"{source}: {what} for the model in its config")
    out_dtype = parse_dtype(dtype) if dtype is not None else state["embed.weight"].dtype
    real = {n: state[n][:cfg.vocab_size] for n in VOCAB_PARAMS if n in state}  # llmctl's padding dropped
    state = {**state, **real}
    hf_state = {hf: state[native].detach().to(out_dtype).contiguous() for native, hf in names.items()}

    tokenizer = load_tokenizer(tok_dir) if tok_dir is not None and has_tokenizer(tok_dir) else None
    ids = {}
    if tokenizer is not None:
        ids = {
            k: v
            for k, v in (
                ("bos_token_id", tokenizer.bos_id),
                ("eos_token_id", tokenizer.eos_id),
                ("pad_token_id", tokenizer.hf.pad_token_id),
            )
            if v is not None
        }
    with atomic_dir(out_dir) as tmp:
        save_file(hf_state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        write_json_atomic(
            tmp / "config.json",
            adapter.config_to_hf(cfg, torch_dtype=str(out_dtype).removeprefix("torch."), **ids),
        )
        if tokenizer is not None:
            tokenizer.save(tmp)
        if not (tmp / "generation_config.json").is_file():
            write_json_atomic(tmp / "generation_config.json", {**ids, "do_sample": False})
    return out_dir
