"""Ascend NPU fused kernels (torch_npu). Registered only when torch_npu imports; each is tested against
the reference on an NPU machine."""

from __future__ import annotations

import torch


def _torch_npu():
    import torch_npu

    return torch_npu


def npu_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return _torch_npu().npu_rms_norm(x, weight, epsilon=eps)[0]


def npu_rope(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    tn = _torch_npu()
    cos = cos.unsqueeze(1).to(q.dtype)
    sin = sin.unsqueeze(1).to(q.dtype)
    return tn.npu_rotary_mul(q, cos, sin), tn.npu_rotary_mul(k, cos, sin)


def npu_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
                  causal: bool = False) -> torch.Tensor:
    """npu_fusion_attention in BNSD layout; its mask marks positions to DROP (True = masked)."""
    tn = _torch_npu()
    T, S = q.shape[2], k.shape[2]
    keep = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T)[None, None] if causal else None
    if mask is not None:
        keep = mask if keep is None else (mask & keep)
    drop = None if keep is None else ~keep
    return tn.npu_fusion_attention(q, k, v, q.shape[1], "BNSD", atten_mask=drop,
                                   scale=q.shape[-1] ** -0.5, keep_prob=1.0)[0]


def npu_swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return _torch_npu().npu_swiglu(torch.cat((gate, up), dim=-1), dim=-1)
