"""Plain-torch reference kernels: the definition every accelerated kernel is tested against."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm computed in fp32, cast back, then scaled (the Llama/HF order of operations)."""
    dtype = x.dtype
    x32 = x.float()
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x32.to(dtype)


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rope(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor):
    """Rotary embedding, half-split layout. q,k: [B, H, T, D]; cos,sin: [B or 1, T, D] (duplicated halves)."""
    cos = cos.unsqueeze(1).to(q.dtype)
    sin = sin.unsqueeze(1).to(q.dtype)
    return q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
              causal: bool = False) -> torch.Tensor:
    """Softmax attention with grouped KV heads. q: [B,H,T,D]; k,v: [B,Hkv,S,D]; mask: bool [B|1,1,T,S]
    (True = attend). `causal` aligns the last query with the last key."""
    groups = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(groups, dim=1)
    v = v.repeat_interleave(groups, dim=1)
    scores = (q.float() @ k.float().transpose(-1, -2)) / (q.shape[-1] ** 0.5)
    T, S = q.shape[2], k.shape[2]
    if causal:
        keep = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T)
        scores = scores.masked_fill(~keep, float("-inf"))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)  # fully-masked (padding) rows -> zeros
    return (probs @ v.float()).to(q.dtype)


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return F.silu(gate) * up


def cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                  ignore_index: int = -100, *, vocab_size: int | None = None) -> torch.Tensor:
    """Per-token loss of the LM head: fp32 CE of (hidden @ weight.T). hidden [N,H], targets [N] -> [N].
    `vocab_size`: the weight's real rows; the rows past it (vocabulary padding) are outside the softmax."""
    logits = (hidden @ weight[:vocab_size].t()).float()
    return F.cross_entropy(logits, targets, ignore_index=ignore_index, reduction="none")
