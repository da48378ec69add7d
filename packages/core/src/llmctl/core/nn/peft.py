"""LoRA adapters in PEFT's on-disk layout (`adapter_config.json` + `adapter_model.safetensors`): names,
reading, writing and merging into a loaded model.

Why in core: the adapter layout is a contract (DESIGN.md) that generate, eval and chat read as well as the
trainer that writes it, and core never imports llmctl-finetune. Training LoRA (the module swap, freezing) is
llmctl-finetune's; this module only knows the file format and `W += scale * B @ A`.

PEFT names a module by its HF path under `base_model.model.`: native `layers.3.attn.q_proj` is
`base_model.model.model.layers.3.self_attn.q_proj`, with `.lora_A.weight` [r, in] and `.lora_B.weight` [out, r].
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch

from ..errors import UserError
from ..io import atomic_dir
from ..model_config import ModelConfig
from .hf_adapters import adapter_for

CONFIG_FILE, WEIGHTS_FILE = "adapter_config.json", "adapter_model.safetensors"
PREFIX = "base_model.model."
#: The projections a LoRA may target: native leaf name -> its HF/PEFT leaf name (identical here).
TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def module_names(cfg: ModelConfig) -> dict[str, str]:
    """native module name -> HF module name for every linear projection a LoRA may target."""
    names = adapter_for(cfg).name_map(cfg)
    return {n[: -len(".weight")]: h[: -len(".weight")] for n, h in names.items()
            if n.endswith(".weight") and n.split(".")[-2] in TARGETS}


def lora_scale(alpha: float, r: int, rslora: bool) -> float:
    """PEFT's scaling: alpha / r, or alpha / sqrt(r) with rank-stabilised LoRA."""
    return alpha / math.sqrt(r) if rslora else alpha / r


def is_adapter_dir(path: str | os.PathLike) -> bool:
    return (Path(path) / CONFIG_FILE).is_file()


def find_adapter_dir(path: str | os.PathLike) -> Path:
    """`path` itself, or for a llmctl LoRA checkpoint root / iter_N dir the `adapter/` of its latest iteration."""
    from .checkpoint import POINTER, iter_dir_name, latest_iteration

    path = Path(path)
    if is_adapter_dir(path):
        return path
    if (path / "adapter").is_dir() and is_adapter_dir(path / "adapter"):
        return path / "adapter"
    if (path / POINTER).is_file():
        it = latest_iteration(path)
        if it is not None and is_adapter_dir(path / iter_dir_name(it) / "adapter"):
            return path / iter_dir_name(it) / "adapter"
    if not path.exists():
        raise UserError(f"--lora-dir {path}: not found")
    raise UserError(f"--lora-dir {path}: no {CONFIG_FILE} (a PEFT adapter dir or a llmctl LoRA checkpoint)")


def read_adapter(path: str | os.PathLike, cfg: ModelConfig) -> tuple[dict[str, Any], float,
                                                                   dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """(adapter config, scale, {native module: (A [r, in], B [out, r])}) of a PEFT LoRA adapter for `cfg`'s model."""
    from safetensors.torch import load_file

    path = find_adapter_dir(path)
    try:
        config = json.loads((path / CONFIG_FILE).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{path / CONFIG_FILE}: invalid JSON ({e})") from None
    where = str(path / CONFIG_FILE)
    if str(config.get("peft_type", "LORA")).upper() != "LORA":
        raise UserError(f"{where}: peft_type {config.get('peft_type')!r}; only LORA adapters are supported")
    for key, ok in (("fan_in_fan_out", False), ("use_dora", False), ("bias", "none")):
        if config.get(key, ok) not in (ok, None):
            raise UserError(f"{where}: {key}={config[key]!r} is not supported")
    for key in ("rank_pattern", "alpha_pattern", "modules_to_save"):
        if config.get(key):
            raise UserError(f"{where}: {key} is not supported")
    r, alpha = int(config["r"]), float(config.get("lora_alpha", 8))
    scale = lora_scale(alpha, r, bool(config.get("use_rslora", False)))
    if not (path / WEIGHTS_FILE).is_file():
        raise UserError(f"{path}: no {WEIGHTS_FILE}")
    tensors = load_file(str(path / WEIGHTS_FILE))
    hf_to_native = {h: n for n, h in module_names(cfg).items()}
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        module, _, leaf = key.removeprefix(PREFIX).rpartition(".lora_")
        if not key.startswith(PREFIX) or leaf not in ("A.weight", "B.weight") or module not in hf_to_native:
            raise UserError(f"{path / WEIGHTS_FILE}: unexpected tensor {key} for this base model")
        pairs.setdefault(hf_to_native[module], {})[leaf[0]] = value
    out = {}
    for module, ab in pairs.items():
        if set(ab) != {"A", "B"}:
            raise UserError(f"{path / WEIGHTS_FILE}: {module} has lora_{'A' if 'A' not in ab else 'B'} missing")
        out[module] = (ab["A"], ab["B"])
    if not out:
        raise UserError(f"{path / WEIGHTS_FILE}: no LoRA tensors")
    return config, scale, out


def write_adapter(out_dir: str | os.PathLike, cfg: ModelConfig, weights: dict[str, tuple[torch.Tensor, torch.Tensor]],
                  *, r: int, alpha: float, dropout: float, rslora: bool, base: str | None = None) -> Path:
    """Write {native module: (A, B)} as a PEFT adapter dir (temp name, renamed when complete)."""
    from safetensors.torch import save_file

    hf = module_names(cfg)
    tensors = {}
    for module, (a, b) in weights.items():
        tensors[f"{PREFIX}{hf[module]}.lora_A.weight"] = a.detach().float().contiguous().cpu()
        tensors[f"{PREFIX}{hf[module]}.lora_B.weight"] = b.detach().float().contiguous().cpu()
    config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base, "r": r,
        "lora_alpha": alpha, "lora_dropout": dropout, "use_rslora": rslora, "bias": "none",
        "fan_in_fan_out": False, "inference_mode": True, "init_lora_weights": True,
        "target_modules": sorted({m.rsplit(".", 1)[-1] for m in weights}), "modules_to_save": None,
        "rank_pattern": {}, "alpha_pattern": {}, "use_dora": False, "layers_to_transform": None,
    }
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return out_dir


@torch.no_grad()
def merge_adapter(model: torch.nn.Module, path: str | os.PathLike) -> dict[str, Any]:
    """Add a PEFT LoRA adapter into `model`'s weights in place (computed in fp32); returns its config."""
    config, scale, weights = read_adapter(path, model.cfg)
    modules = dict(model.named_modules())
    for name, (a, b) in weights.items():
        linear = modules[name]
        if tuple(b.shape) != (linear.weight.shape[0], a.shape[0]) or a.shape[1] != linear.weight.shape[1]:
            raise UserError(f"{path}: {name} adapter shapes A{tuple(a.shape)} B{tuple(b.shape)} do not fit "
                            f"the base weight {tuple(linear.weight.shape)}")
        w = linear.weight
        merged = w.float() + scale * (b.to(w.device).float() @ a.to(w.device).float())
        w.copy_(merged.to(w.dtype))
    return config
