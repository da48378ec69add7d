"""LoRA applied from outside the model: each targeted `nn.Linear` is swapped for a `LoRALinear` that keeps the
frozen weight under the same name and adds `lora_A` / `lora_B` (PEFT's math and initialisation), so the
model file knows nothing of adapters and a checkpoint's base names do not change.

    y = x W^T + b + scale * B(A(dropout(x))),   scale = alpha / r  (rsLoRA: alpha / sqrt(r))
"""

from __future__ import annotations

import contextlib
import fnmatch
import math
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from llmctl.core.errors import UserError
from llmctl.core.nn.peft import TARGETS, lora_scale, module_names, write_adapter

from .options import TARGET_ALIASES, LoraOptions


class LoRALinear(nn.Module):
    """A frozen linear layer plus a trainable low-rank update; `disabled` turns the update off (the DPO
    reference of a LoRA run is the base with adapters disabled)."""

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float, rslora: bool):
        super().__init__()
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight
        self.bias = base.bias
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        device = base.weight.device
        self.lora_A = nn.Linear(self.in_features, r, bias=False, device=device, dtype=torch.float32)
        self.lora_B = nn.Linear(r, self.out_features, bias=False, device=device, dtype=torch.float32)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))  # PEFT's init_lora_weights=True
        nn.init.zeros_(self.lora_B.weight)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.scale = lora_scale(alpha, r, rslora)
        self.disabled = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.weight, self.bias)
        if self.disabled:
            return out
        # scaled at rank r, not at out_features (PEFT scales B's output): one pass over [tokens, r] instead of
        # [tokens, out] in the forward and in the backward
        return out + self.lora_B(self.lora_A(self.dropout(x)) * self.scale)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, r={self.lora_A.out_features}, scale={self.scale:g}"


def resolve_targets(model: nn.Module, targets: list[str]) -> list[str]:
    """Native module names of the linear projections `targets` select. Each target is an alias (q, k, v, o,
    gate, up, down, all, linear_qkv, linear_proj, linear_fc1, linear_fc2), a leaf name (q_proj) or a glob
    over native module names (layers.0.attn.*); one that selects nothing is a UserError naming it."""
    candidates = list(module_names(model.cfg))
    chosen: list[str] = []
    for target in targets:
        t = str(target)
        leaves = TARGET_ALIASES.get(t) or ([t] if t in TARGETS else None)
        if leaves is not None:
            hits = [m for m in candidates if m.rsplit(".", 1)[-1] in leaves]
        else:
            hits = [m for m in candidates if fnmatch.fnmatchcase(m, t)]
        if not hits:
            raise UserError(f"task.lora.targets: '{t}' matches no module of the model; use "
                            f"{', '.join(TARGET_ALIASES)}, a leaf name ({', '.join(TARGETS)}) or a glob "
                            f"over names like {candidates[0]}")
        chosen += [m for m in hits if m not in chosen]
    return [m for m in candidates if m in chosen]  # model order


def apply_lora(model: nn.Module, opts: LoraOptions) -> list[str]:
    """Freeze every parameter of `model`, swap the targeted linears for LoRALinear; returns their names."""
    names = resolve_targets(model, list(opts.targets))
    for p in model.parameters():
        p.requires_grad_(False)
    if opts.base_dtype == "bf16":
        model.to(torch.bfloat16)  # the frozen base only: adapters are created below, in fp32
    for name in names:
        parent_name, leaf = name.rsplit(".", 1)
        parent = model.get_submodule(parent_name)
        setattr(parent, leaf, LoRALinear(getattr(parent, leaf), opts.r, opts.alpha, opts.dropout, opts.rslora))
    return names


def lora_modules(model: nn.Module) -> Iterator[tuple[str, LoRALinear]]:
    for name, module in model.named_modules():
        if isinstance(module, LoRALinear):
            yield name, module


@contextlib.contextmanager
def adapters_disabled(model: nn.Module):
    mods = [m for _, m in lora_modules(model)]
    for m in mods:
        m.disabled = True
    try:
        yield
    finally:
        for m in mods:
            m.disabled = False


def is_adapter_key(name: str) -> bool:
    return ".lora_A." in name or ".lora_B." in name


def adapter_weights(state: dict[str, torch.Tensor]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{native module: (A, B)} from a state dict holding `<module>.lora_{A,B}.weight` entries."""
    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for key in state:
        if key.endswith(".lora_A.weight"):
            module = key[: -len(".lora_A.weight")]
            out[module] = (state[key], state[f"{module}.lora_B.weight"])
    return out


def export_adapter(out_dir, cfg, state: dict[str, torch.Tensor], opts: LoraOptions, base: str | None):
    """Write the adapters in `state` (native names) as a PEFT adapter dir."""
    return write_adapter(out_dir, cfg, adapter_weights(state), r=opts.r, alpha=opts.alpha, dropout=opts.dropout,
                         rslora=opts.rslora, base=base)
