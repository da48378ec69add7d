"""Context parallelism: each of `cp` ranks runs the sequence's tokens of two load-balanced chunks, attention
over all-gathered keys/values (written on torch collectives, applied to the unchanged model from outside).

`torch.distributed.tensor.experimental.context_parallel` dispatches to the CUDA flash/efficient SDPA ops; on
CPU with gloo it fails ("cannot resize variables that require grad", torch 2.13), so this is the issue's
fallback. The sequence is cut into 2·cp chunks and rank r holds chunks r and 2·cp-1-r, so every rank has
the same amount of causal work (Megatron/torchtitan's load balancing). Positions (RoPE) are the chunks'
global positions; the attention kernel all-gathers K/V across the group (its backward sums their grads
back to their owners) and masks by global position, so the result is exact causal attention.

`ContextParallel(model, cp_mesh)` wraps a Transformer: it takes the whole batch, runs the local chunks and
returns the *whole* per-token loss [B, T] (all-gathered as a DTensor, whose backward hands each rank the
gradient of its own tokens only), so the task sums and counts exactly as in one process and every CP rank
holds the same loss; the parameters' grads are partial over CP ranks and are summed like DP grads.
Rows holding several documents (neat-packed samples: `documents`, `positions`) keep them apart in the same
mask: a query sees the keys of its own document only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
import torch.distributed._functional_collectives as funcol
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor, Shard

from llmctl.core.errors import UserError
from llmctl.core.nn.model import Documents


def local_positions(seq: int, rank: int, size: int, device=None) -> torch.Tensor:
    """Global positions rank `rank` of `size` holds of a `seq`-long sequence: chunks r and 2·size-1-r."""
    if seq % (2 * size):
        raise UserError(f"context parallelism {size} needs data.seq_length divisible by 2 x cp = {2 * size}, "
                        f"got {seq}")
    c = seq // (2 * size)
    lo, hi = rank * c, (2 * size - 1 - rank) * c
    return torch.cat([torch.arange(lo, lo + c, device=device), torch.arange(hi, hi + c, device=device)])


def gather_sequence(x: torch.Tensor, group) -> torch.Tensor:
    """[B, H, T, D] shards -> [B, H, size·T, D] in rank order; the backward reduce-scatters the grads to
    their owners. (torch.distributed.nn.functional.all_gather's gloo backward mis-sends non-contiguous
    grads, torch 2.13; funcol gathers on dim 0, so the sequence dim goes first.)"""
    return funcol.all_gather_single_autograd(x.transpose(0, 2).contiguous(), 0, group).transpose(0, 2)


def cp_attention(inner: Callable, group, rank: int, size: int, segments: Callable[[], torch.Tensor | None]
                 ) -> Callable:
    """The attention kernel over K/V gathered from the CP group; `inner` is the model's own kernel.
    `segments()`: the current micro-batch's document ids [B, T] (neat-packed rows), or None: a query then
    sees only keys of its own document."""

    def attention(q, k, v, mask=None, causal=False):
        t_local = q.shape[2]
        k, v = gather_sequence(k, group), gather_sequence(v, group)
        q_pos = local_positions(t_local * size, rank, size, q.device)
        k_pos = torch.cat([local_positions(t_local * size, r, size, q.device) for r in range(size)])
        keep = (q_pos[:, None] >= k_pos[None, :])[None, None] if causal else None
        if mask is not None:
            raise NotImplementedError("context-parallel attention with a padding mask")
        ids = segments()
        if ids is not None:
            same = ids[:, q_pos, None] == ids[:, None, k_pos]  # [B, T_local, T]
            keep = same[:, None] if keep is None else keep & same[:, None]
        return inner(q, k, v, mask=keep, causal=False)

    return attention


class ContextParallel(torch.nn.Module):
    """Runs `model` on this rank's chunks of the sequence; see the module docstring."""

    def __init__(self, model: torch.nn.Module, cp_mesh: DeviceMesh):
        super().__init__()
        self.model, self.mesh = model, cp_mesh
        self.rank, self.size = cp_mesh.get_local_rank(), cp_mesh.size()
        ops = model.ops
        # the micro-batch's document ids, set by forward and read by the kernel (also when activation
        # checkpointing recomputes a block in the backward, which runs before the next forward)
        self.segments: torch.Tensor | None = None
        kernel = cp_attention(ops.attention, cp_mesh.get_group(), self.rank, self.size, lambda: self.segments)
        names = {**ops.names, "attention": f"cp-allgather({ops.names['attention']})"}
        model.set_kernels(dataclasses.replace(ops, attention=kernel, names=names))

    def forward(self, tokens: torch.Tensor, targets: torch.Tensor | None = None, *,
                positions: torch.Tensor | None = None, documents: Documents | None = None,
                **kwargs) -> torch.Tensor:
        """`documents` (neat-packed rows: each row's own, none crossing a row's end) with their `positions`."""
        if targets is None or kwargs:
            raise UserError("a context-parallel model computes training/validation losses only")
        B, seq = tokens.shape
        mine = local_positions(seq, self.rank, self.size, tokens.device)
        self.segments = documents.ids(B, seq).to(tokens.device) if documents is not None else None
        local_pos = positions[:, mine] if positions is not None else mine[None]
        local = self.model(tokens[:, mine], targets[:, mine], positions=local_pos)
        gathered = DTensor.from_local(local, self.mesh, [Shard(1)]).full_tensor()  # rank-major chunk order
        order = torch.cat([local_positions(seq, r, self.size, tokens.device) for r in range(self.size)])
        return gathered[:, torch.argsort(order)]
