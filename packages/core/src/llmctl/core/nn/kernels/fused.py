"""Accelerated kernels in plain PyTorch: SDPA attention (flash/mem-efficient on CUDA) and a chunked
linear + cross-entropy that never materialises the full [tokens, vocab] fp32 logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def sdpa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
                   causal: bool = False) -> torch.Tensor:
    """`scaled_dot_product_attention` with native GQA. Same contract as reference.attention."""
    T, S = q.shape[2], k.shape[2]
    if mask is None and causal and T != S:
        # SDPA's is_causal aligns top-left; we need bottom-right (queries are the last T positions).
        mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T)[None, None]
        causal = False
    elif mask is not None and causal:
        mask = mask & torch.ones(T, S, dtype=torch.bool, device=q.device).tril(S - T)
        causal = False
    if mask is not None:
        # A fully-masked row (left padding) would give NaN; let it attend to itself-position key instead.
        mask = mask | ~mask.any(-1, keepdim=True)
    groups = q.shape[1] // k.shape[1]
    if groups > 1:
        try:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, enable_gqa=True)
        except TypeError:  # torch < 2.5
            k = k.repeat_interleave(groups, dim=1)
            v = v.repeat_interleave(groups, dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)


def torch_rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """Fused RMSNorm kernel (torch >= 2.4) in fp32 then cast: same numerics as the reference."""
    return weight * F.rms_norm(x.float(), (x.shape[-1],), eps=eps).to(x.dtype)


class _ChunkedLinearCE(torch.autograd.Function):
    """Loss per token of (hidden @ weight.T) computed chunk by chunk; backward recomputes each chunk's
    logits from the saved log-sum-exp, so peak memory is one chunk of logits instead of all of them."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, ignore_index, chunk):
        losses = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        lse = torch.empty_like(losses)
        for start in range(0, hidden.shape[0], chunk):
            logits = (hidden[start:start + chunk] @ weight.t()).float()
            t = targets[start:start + chunk]
            chunk_lse = torch.logsumexp(logits, dim=-1)
            valid = t != ignore_index
            picked = logits.gather(1, t.clamp_min(0)[:, None]).squeeze(1)
            losses[start:start + chunk] = torch.where(valid, chunk_lse - picked, 0.0)
            lse[start:start + chunk] = chunk_lse
        ctx.save_for_backward(hidden, weight, targets, lse)
        ctx.ignore_index, ctx.chunk = ignore_index, chunk
        return losses

    @staticmethod
    def backward(ctx, grad_losses):
        hidden, weight, targets, lse = ctx.saved_tensors
        grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) \
            if ctx.needs_input_grad[1] else None
        for start in range(0, hidden.shape[0], ctx.chunk):
            h = hidden[start:start + ctx.chunk]
            t = targets[start:start + ctx.chunk]
            probs = torch.exp((h @ weight.t()).float() - lse[start:start + ctx.chunk, None])
            valid = t != ctx.ignore_index
            probs.scatter_add_(1, t.clamp_min(0)[:, None], -valid[:, None].float())
            probs *= (grad_losses[start:start + ctx.chunk] * valid)[:, None]
            g = probs.to(hidden.dtype)
            if grad_hidden is not None:
                grad_hidden[start:start + ctx.chunk] = g @ weight
            if grad_weight is not None:
                grad_weight += (g.t() @ h).float()
        if grad_weight is not None:
            grad_weight = grad_weight.to(weight.dtype)
        return grad_hidden, grad_weight, None, None, None


def chunked_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                          ignore_index: int = -100, chunk: int = 4096, *, vocab_size: int | None = None
                          ) -> torch.Tensor:
    """Same contract as reference.cross_entropy, O(chunk x vocab) memory. The padded rows past
    `vocab_size` are left out (a view of the real rows: their gradient stays zero)."""
    return _ChunkedLinearCE.apply(hidden, weight[:vocab_size], targets, ignore_index, chunk)
