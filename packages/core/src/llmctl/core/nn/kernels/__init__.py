"""Kernel registry: each op has a plain-torch reference and optional accelerated implementations chosen by
device and priority (overridable per op in config). Ops: rms_norm, rope, attention, swiglu, cross_entropy."""

from __future__ import annotations

import dataclasses
from typing import Callable

from ...errors import UserError
from . import reference

OPS = ("rms_norm", "rope", "attention", "swiglu", "cross_entropy")


@dataclasses.dataclass
class KernelSet:
    """The functions a model calls; a plain object so torch.compile sees ordinary Python calls."""

    rms_norm: Callable = reference.rms_norm
    rope: Callable = reference.rope
    attention: Callable = reference.attention
    swiglu: Callable = reference.swiglu
    cross_entropy: Callable = reference.cross_entropy
    names: dict = dataclasses.field(default_factory=lambda: {op: "reference" for op in OPS})


def default_kernels() -> KernelSet:
    """What a model uses unless told otherwise: references, with SDPA attention (plain torch, every device)."""
    from .fused import sdpa_attention

    ks = KernelSet(attention=sdpa_attention)
    ks.names["attention"] = "sdpa"
    return ks


def builtin_kernels(register) -> None:
    """Registered by llmctl-core's plugin (register(op, backend, impl, priority, available))."""
    from . import fused

    everywhere = lambda device_type: True  # noqa: E731
    accel = lambda device_type: device_type in ("cuda", "npu")  # noqa: E731
    for op in OPS:
        register(op, "reference", getattr(reference, op), priority=0, available=everywhere)
    register("attention", "sdpa", fused.sdpa_attention, priority=10, available=everywhere)
    register("rms_norm", "torch", fused.torch_rms_norm, priority=5, available=accel)
    register("cross_entropy", "chunked", fused.chunked_cross_entropy, priority=10, available=accel)
    try:
        import torch_npu  # noqa: F401
    except Exception:
        return
    from . import npu

    on_npu = lambda device_type: device_type == "npu"  # noqa: E731
    register("rms_norm", "npu", npu.npu_rms_norm, priority=20, available=on_npu)
    register("rope", "npu", npu.npu_rope, priority=20, available=on_npu)
    register("attention", "npu", npu.npu_attention, priority=20, available=on_npu)
    register("swiglu", "npu", npu.npu_swiglu, priority=20, available=on_npu)


def select_kernels(device_type: str, overrides: dict[str, str] | None = None) -> KernelSet:
    """Highest-priority available implementation per op for `device_type`; `overrides` maps op -> backend."""
    from ...plugins import get_bus

    overrides = dict(overrides or {})
    unknown = set(overrides) - set(OPS)
    if unknown:
        raise UserError(f"unknown kernel op '{sorted(unknown)[0]}' in kernels config; ops are {', '.join(OPS)}")
    registry = get_bus().registry("kernels")
    chosen = KernelSet()
    for op in OPS:
        candidates = [e for e in registry.values() if e.extra["op"] == op]
        if op in overrides:
            match = [e for e in candidates if e.extra["backend"] == overrides[op]]
            if not match:
                backends = ", ".join(sorted(e.extra["backend"] for e in candidates))
                raise UserError(f"kernel '{op}' has no backend '{overrides[op]}' (available: {backends})")
            best = match[0]
        else:
            usable = [e for e in candidates
                      if e.extra["available"] is None or e.extra["available"](device_type)]
            if not usable:
                continue
            best = max(usable, key=lambda e: e.extra["priority"])
        setattr(chosen, op, best.value)
        chosen.names[op] = best.extra["backend"]
    return chosen
