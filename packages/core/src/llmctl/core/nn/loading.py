"""Load a ready-to-run model from a llmctl (Megatron-layout) checkpoint or a Hugging Face directory.

Both paths end in the same native state dict checked strictly against the model, so a missing or stray
weight is a one-line UserError instead of a silently random layer. HF weights are read with safetensors or
`torch.load(weights_only=True)`: nothing in a downloaded model directory can run code.

The vocabulary rows a checkpoint brings are the model's own (an HF model's, a Megatron-core checkpoint's
padded rows, which Megatron trains); only the rows past a llmctl save's `model.vocab_size` are padding,
re-made for the model built and masked out.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import torch

from . import checkpoint
from ..config import from_dict
from .device import pick_device, require_device
from ..errors import UserError
from .hf_adapters import adapter_for_hf_config
from ..model_config import ModelConfig
from .build import build_model, check_keys
from .mcore_io import is_mcore_checkpoint, read_mcore_state
from .model import Transformer
from ..tokenizer import Tokenizer, find_tokenizer_dir, load_tokenizer

#: HF buffers some checkpoints carry that are recomputed, not learned.
_IGNORED_HF_SUFFIXES = ("rotary_emb.inv_freq",)


@dataclasses.dataclass
class LoadedModel:
    model: Transformer
    tokenizer: Tokenizer | None
    config: ModelConfig
    source: str  # "native" | "hf" | "mcore"
    path: Path


def is_hf_dir(path: str | os.PathLike) -> bool:
    path = Path(path)
    return (path / "config.json").is_file() and not (path / checkpoint.POINTER).is_file()


def load_model(
    path: str | os.PathLike,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype = torch.float32,
    iteration: int | None = None,
    lora_dir: str | os.PathLike | None = None,
) -> LoadedModel:
    """A model in eval mode (plus its tokenizer, if the directory carries one) from a native checkpoint root,
    an `iter_N` directory, or an HF directory (config.json + *.safetensors / pytorch_model.bin).
    `lora_dir`: a PEFT LoRA adapter (or a llmctl LoRA checkpoint) merged into the weights after loading."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"model directory not found: {path}")
    if is_hf_dir(path):
        cfg, state = read_hf_state(path)
        source, tok_dir = "hf", find_tokenizer_dir(path)
    elif is_mcore_checkpoint(path, iteration):  # same directory layout as native: told apart by its keys
        cfg, state, it_dir, _ = read_mcore_state(path, iteration)
        cfg = _llmctl_vocab(cfg, it_dir)
        source, tok_dir = "mcore", find_tokenizer_dir(it_dir / "tokenizer")
    elif checkpoint.is_checkpoint_dir(path):
        cfg, state, it_dir = read_native_state(path, iteration)
        source, tok_dir = "native", find_tokenizer_dir(it_dir / "tokenizer")
    else:
        raise UserError(
            f"{path}: neither a llmctl checkpoint ({checkpoint.POINTER}) nor an HF model dir (config.json)"
        )
    dev = require_device(device) if device is not None else pick_device()
    model = build_model(cfg, state, device=dev, dtype=dtype, source=str(path)).eval()
    if lora_dir is not None:
        from .peft import merge_adapter

        merge_adapter(model, lora_dir)
    tokenizer = load_tokenizer(tok_dir) if tok_dir is not None else None
    check_tokenizer_fits(cfg, tokenizer, path)
    return LoadedModel(model, tokenizer, cfg, source, path)


def check_tokenizer_fits(cfg: ModelConfig, tokenizer: Tokenizer | None, source: Any) -> None:
    """One line when the model's vocabulary cannot hold every id its tokenizer emits."""
    if tokenizer is not None and tokenizer.vocab_size > cfg.vocab_size:
        raise UserError(f"{source}: model.vocab_size {cfg.vocab_size} (padded_vocab_size {cfg.vocab_rows}) "
                        f"cannot hold its tokenizer's {tokenizer.vocab_size} ids ({tokenizer.path})")


def _llmctl_vocab(cfg: ModelConfig, it_dir: Path) -> ModelConfig:
    """A megatron-core checkpoint that llmctl's training wrote (checkpoint.format mcore) carries its
    config.yaml: the rows past its model.vocab_size are llmctl's padding, not the model's."""
    config = it_dir / "config.yaml"
    if not config.is_file():
        return cfg
    import yaml

    saved = (yaml.safe_load(config.read_text()) or {}).get("model") or {}
    vocab = saved.get("vocab_size")
    if not isinstance(vocab, int) or not 0 < vocab <= cfg.vocab_size:
        return cfg
    return dataclasses.replace(cfg, vocab_size=vocab, padded_vocab_size=cfg.vocab_size,
                               make_vocab_size_divisible_by=saved.get("make_vocab_size_divisible_by",
                                                                      cfg.make_vocab_size_divisible_by))


# ---- native ------------------------------------------------------------------------------------------------
def read_native_state(
    path: str | os.PathLike, iteration: int | None = None
) -> tuple[ModelConfig, dict[str, torch.Tensor], Path]:
    """(ModelConfig from config.yaml's `model` section, native model state dict, iteration dir)."""
    state, config, it_dir = checkpoint.load_checkpoint(path, iteration)
    if not isinstance(config.get("model"), dict):
        raise UserError(f"{it_dir / 'config.yaml'}: no 'model' section; cannot rebuild the model")
    cfg = from_dict(ModelConfig, config["model"], prefix="model")
    model_state = state.get("model") if isinstance(state, dict) else None
    if not isinstance(model_state, dict):
        raise UserError(f"{it_dir}: checkpoint state has no 'model' state dict")
    return cfg, model_state, it_dir


# ---- Hugging Face ------------------------------------------------------------------------------------------
def read_hf_config(hf_dir: str | os.PathLike) -> dict[str, Any]:
    cfg_file = Path(hf_dir) / "config.json"
    if not cfg_file.is_file():
        raise UserError(f"{hf_dir}: no config.json; not a Hugging Face model directory")
    try:
        return json.loads(cfg_file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{cfg_file}: invalid JSON ({e})") from None


def read_hf_state(hf_dir: str | os.PathLike) -> tuple[ModelConfig, dict[str, torch.Tensor]]:
    """(ModelConfig, native-named state dict) from an HF llama/qwen2 dir, weights in their stored dtype."""
    hf_dir = Path(hf_dir)
    hf_cfg = read_hf_config(hf_dir)
    adapter = adapter_for_hf_config(hf_cfg, source=str(hf_dir / "config.json"))
    cfg = adapter.config_from_hf(hf_cfg)
    cfg.validate()
    hf_state = read_hf_weights(hf_dir)
    names = adapter.name_map(cfg)  # native -> HF
    found = {name for name in hf_state if not name.endswith(_IGNORED_HF_SUFFIXES)
             and not (name == "lm_head.weight" and cfg.tie_embeddings)}  # some tied models store it twice
    check_keys(set(names.values()), found, f"{hf_dir} ({adapter.architecture} per its config.json)")
    state = {native: hf_state[hf] for native, hf in names.items()}
    return cfg, state


def read_hf_weights(hf_dir: Path) -> dict[str, torch.Tensor]:
    """All tensors of an HF dir: sharded or single safetensors, else pytorch_model*.bin (weights_only)."""
    files = _weight_files(hf_dir, "model.safetensors.index.json", "*.safetensors")
    if files:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        state = {}
        for f in files:
            try:
                state.update(load_file(str(f)))
            except (SafetensorError, OSError) as e:
                raise UserError(f"{f}: cannot read safetensors ({e})") from None
        return state
    files = _weight_files(hf_dir, "pytorch_model.bin.index.json", "pytorch_model*.bin")
    if not files:
        raise UserError(
            f"{hf_dir}: no weights (expected model.safetensors, sharded *.safetensors with "
            "model.safetensors.index.json, or pytorch_model.bin)"
        )
    state = {}
    for f in files:
        try:
            state.update(torch.load(f, map_location="cpu", weights_only=True))
        except Exception as e:  # unpickling refusal or corruption: one line, never run the pickle
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"{f}: refused or unreadable weights ({first[:160]})") from None
    return state


def _weight_files(hf_dir: Path, index_name: str, pattern: str) -> list[Path]:
    index = hf_dir / index_name
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        except (ValueError, KeyError, UnicodeDecodeError):
            raise UserError(f"{index}: invalid index (expected JSON with a 'weight_map')") from None
        files = [hf_dir / f for f in sorted(set(weight_map.values()))]
        absent = [f.name for f in files if not f.is_file()]
        if absent:
            raise UserError(f"{index}: names shard files that are missing: {', '.join(absent[:3])}")
        return files
    return sorted(hf_dir.glob(pattern))
