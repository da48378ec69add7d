"""Tensor + sequence parallelism applied to the unchanged `Transformer` from outside (torchtitan's apply_tp).

Megatron's layout, written as DTensor `parallelize_module` plans over the tensor-parallel mesh:
- q/k/v and gate/up are column-parallel (heads / ffn columns split), o and down row-parallel, so a block
  costs one all-gather and one reduce-scatter (with sequence parallelism) or one all-reduce (without);
- the embedding is vocab-parallel (row-parallel on the vocab dim) and so is the LM head's weight;
- with sequence parallelism the residual stream and the norms hold a sequence shard (`Shard(1)`), and the
  attention/MLP inputs are gathered to the whole sequence by `PrepareModuleInput`.

A projection wrapped with a low-rank adapter (llmctl-finetune's `LoRALinear`: the linear's own `weight`/`bias`
plus `lora_A`/`lora_B` linears, PEFT's names) takes the linear's place in the plan, split as Megatron/MindSpeed
split LoRA on parallel layers: on a column-parallel layer `lora_A` is replicated and `lora_B` split on its output
dim like the weight; on a row-parallel layer `lora_A` is split on its input dim like the weight and `lora_B`
replicated, so base and adapter outputs are partial sums reduced together in the layer's one reduction.
Frozen parameters stay frozen (torch's SequenceParallel re-creates the norms' as trainable).

GQA: k/v heads split contiguously like q heads, so rank r's q heads (r·H/tp ...) use exactly its own kv heads
(r·Hkv/tp ...); tp must divide both. The per-rank head counts the model reshapes with are set from here.

The loss never materialises logits over the whole vocab: `vocab_parallel_cross_entropy` (Megatron's
vocab-parallel cross-entropy, chunked over tokens like `fused.chunked_cross_entropy`) is set as the model's
cross_entropy kernel; each rank computes logits for its vocab shard only, a chunk of tokens at a time, and the
log-sum-exp and target logit are reduced across the tensor-parallel group.

The vocabulary is Megatron's padded one (model.padded_vocab_size: the tokenizer's size rounded up to a
multiple of make_vocab_size_divisible_by x TP), so TP never has to divide the tokenizer's size. The padded
rows (the end of the last shards, or whole shards) are -inf logits in the vocab-parallel softmax: no
probability, no gradient, the same loss as one process with less (or no) padding.
"""

from __future__ import annotations

import dataclasses
from functools import partial

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor, Placement, Replicate, Shard, distribute_module, distribute_tensor
from torch.distributed.tensor.parallel import (
    ColwiseParallel,
    PrepareModuleInput,
    PrepareModuleOutput,
    RowwiseParallel,
    SequenceParallel,
    parallelize_module,
)

from llmctl.core.errors import UserError
from llmctl.core.nn.kernels.fused import chunked_cross_entropy


#: Attention.forward(x, cos, sin, mask, cache, layer): only x is a sequence-sharded activation.
_ATTN_ARGS = 6


def blocks(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformer blocks (a pipeline stage keeps its own in a ModuleDict under their global indices),
    under an activation-checkpoint wrapper if one was applied."""
    layers = model.layers.values() if isinstance(model.layers, torch.nn.ModuleDict) else model.layers
    return [getattr(b, "_checkpoint_wrapped_module", b) for b in layers]


def check_tp(cfg, tp: int) -> None:
    """Sizes tensor parallelism must divide (one line each, before any process group work). The vocabulary
    rows are padded for the run's TP (model.padded_vocab_size), so any tokenizer's size works."""
    for what, n in (("model.num_heads", cfg.num_heads), ("KV heads (model.num_kv_heads)", cfg.kv_heads),
                    ("model.ffn_hidden_size", cfg.ffn_hidden_size), ("model.padded_vocab_size", cfg.vocab_rows)):
        if n % tp:
            raise UserError(f"parallel.tp {tp} does not divide {what} {n}")


def is_adapted_linear(module: torch.nn.Module) -> bool:
    """A linear layer's parameters plus a low-rank adapter (`lora_A`, `lora_B` linears) in one module."""
    return (not isinstance(module, torch.nn.Linear) and isinstance(getattr(module, "weight", None), torch.Tensor)
            and all(isinstance(getattr(module, k, None), torch.nn.Linear) for k in ("lora_A", "lora_B")))


def _split(placements: dict[str, Placement]):
    """A distribute_module partition_fn: the parameters at these paths inside the module are split (keeping
    requires_grad); distribute_module replicates the rest."""
    def partition(prefix: str, module: torch.nn.Module, mesh: DeviceMesh) -> None:
        for name, param in list(module.named_parameters(recurse=False)):
            placement = placements.get(f"{prefix}.{name}" if prefix else name)
            if placement is not None:
                module.register_parameter(name, torch.nn.Parameter(
                    distribute_tensor(param, mesh, [placement]), requires_grad=param.requires_grad))
    return partition


class _Colwise(ColwiseParallel):
    """ColwiseParallel that also splits an adapted linear: weight, bias and lora_B on the output dim."""

    def _apply(self, module: torch.nn.Module, mesh: DeviceMesh) -> torch.nn.Module:
        if not is_adapted_linear(module):
            return super()._apply(module, mesh)
        return distribute_module(
            module, mesh, _split({"weight": Shard(0), "bias": Shard(0), "lora_B.weight": Shard(0)}),
            partial(self._prepare_input_fn, self.input_layouts, self.desired_input_layouts),
            partial(self._prepare_output_fn, self.output_layouts, self.use_local_output))


class _Rowwise(RowwiseParallel):
    """RowwiseParallel that also splits an adapted linear: weight and lora_A on the input dim."""

    def _apply(self, module: torch.nn.Module, mesh: DeviceMesh) -> torch.nn.Module:
        if not is_adapted_linear(module):
            return super()._apply(module, mesh)
        self.desired_input_layouts = (Shard(-1),)
        return distribute_module(
            module, mesh, _split({"weight": Shard(1), "lora_A.weight": Shard(1)}),
            partial(self._prepare_input_fn, self.input_layouts, self.desired_input_layouts),
            partial(self._prepare_output_fn, self.output_layouts, self.use_local_output))


def apply_tensor_parallel(model: torch.nn.Module, tp_mesh: DeviceMesh, sequence_parallel: bool = True
                          ) -> torch.nn.Module:
    """Shard `model` (a Transformer, or a pipeline stage of one: embed/norm/lm_head may be None) in place
    over the 1-D `tp_mesh`; returns it."""
    tp = tp_mesh.size()
    check_tp(model.cfg, tp)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    seq = Shard(1) if sequence_parallel else Replicate()
    top = {
        "embed": RowwiseParallel(input_layouts=Replicate(), output_layouts=seq),
        # generation calls lm_head on the full hidden state: gather its vocab shards; the loss path reads
        # only the (vocab-sharded) weight, through vocab_parallel_cross_entropy
        "lm_head": ColwiseParallel(input_layouts=Replicate(), output_layouts=Replicate()),
    }
    parallelize_module(model, tp_mesh, {k: v for k, v in top.items() if getattr(model, k) is not None})
    if sequence_parallel and model.norm is not None:
        parallelize_module(model.norm, tp_mesh, SequenceParallel())
        # the LM head consumes the whole sequence (Megatron gathers before the output layer)
        parallelize_module(model.norm, tp_mesh, PrepareModuleOutput(
            output_layouts=Shard(1), desired_output_layouts=Replicate(), use_local_output=True))
    if model.cfg.tie_embeddings and model.embed is not None and model.lm_head is not None:
        model.lm_head.weight = model.embed.weight  # both vocab-sharded on dim 0: keep them one parameter

    for block in blocks(model):
        plan = {"attn.q_proj": _Colwise(), "attn.k_proj": _Colwise(), "attn.v_proj": _Colwise(),
                "attn.o_proj": _Rowwise(output_layouts=seq), "mlp.gate_proj": _Colwise(),
                "mlp.up_proj": _Colwise(), "mlp.down_proj": _Rowwise(output_layouts=seq)}
        if sequence_parallel:
            rest = (None,) * (_ATTN_ARGS - 1)
            plan.update({
                "input_norm": SequenceParallel(), "post_attn_norm": SequenceParallel(),
                "attn": PrepareModuleInput(input_layouts=(Shard(1), *rest),
                                           desired_input_layouts=(Replicate(), *rest)),
                "mlp": PrepareModuleInput(input_layouts=(Shard(1),), desired_input_layouts=(Replicate(),))})
        parallelize_module(block, tp_mesh, plan)
        block.attn.n_heads //= tp  # the local q/k/v projections hold H/tp and Hkv/tp heads
        block.attn.n_kv //= tp

    ops = dataclasses.replace(model.ops, cross_entropy=vocab_parallel_cross_entropy,
                              names={**model.ops.names, "cross_entropy": "vocab_parallel"})
    model.set_kernels(ops)
    for name, p in model.named_parameters():
        if name in frozen:
            p.requires_grad_(False)
    return model


class _VocabParallelCE(torch.autograd.Function):
    """Per-token loss of hidden @ weight.T where each rank holds rows [start, start + V/tp) of the weight, the
    first `real` of them inside the vocabulary (the rest padding, masked out).
    Forward: per chunk of tokens, local logits -> global max (all-reduce MAX) -> global sum of exp and the
    target's logit (one all-reduce SUM). Backward recomputes each chunk's local logits from the saved
    log-sum-exp; the hidden's gradient is a sum of every shard's part (all-reduce SUM)."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, start, real, group, ignore_index, chunk):
        n, v_local = hidden.shape[0], weight.shape[0]
        losses = torch.empty(n, dtype=torch.float32, device=hidden.device)
        lse = torch.empty_like(losses)
        for lo in range(0, n, chunk):
            logits = _local_logits(hidden[lo:lo + chunk], weight, real)
            t = targets[lo:lo + chunk]
            local_t = t - start
            mine = (local_t >= 0) & (local_t < v_local)
            peak = logits.max(-1).values
            dist.all_reduce(peak, op=dist.ReduceOp.MAX, group=group)
            picked = logits.gather(1, local_t.clamp(0, v_local - 1)[:, None]).squeeze(1)
            sums = torch.stack([(logits - peak[:, None]).exp().sum(-1), torch.where(mine, picked, 0.0)])
            dist.all_reduce(sums, group=group)
            chunk_lse = peak + sums[0].log()
            losses[lo:lo + chunk] = torch.where(t != ignore_index, chunk_lse - sums[1], 0.0)
            lse[lo:lo + chunk] = chunk_lse
        ctx.save_for_backward(hidden, weight, targets, lse)
        ctx.start, ctx.real, ctx.group, ctx.ignore_index, ctx.chunk = start, real, group, ignore_index, chunk
        return losses

    @staticmethod
    def backward(ctx, grad_losses):
        hidden, weight, targets, lse = ctx.saved_tensors
        v_local, chunk = weight.shape[0], ctx.chunk
        grad_hidden = torch.empty_like(hidden)
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        for lo in range(0, hidden.shape[0], chunk):
            h, t = hidden[lo:lo + chunk], targets[lo:lo + chunk]
            probs = torch.exp(_local_logits(h, weight, ctx.real) - lse[lo:lo + chunk, None])
            local_t = t - ctx.start
            hit = ((local_t >= 0) & (local_t < v_local) & (t != ctx.ignore_index)).float()
            probs.scatter_add_(1, local_t.clamp(0, v_local - 1)[:, None], -hit[:, None])
            probs *= (grad_losses[lo:lo + chunk] * (t != ctx.ignore_index))[:, None]
            g = probs.to(hidden.dtype)
            grad_hidden[lo:lo + chunk] = g @ weight
            grad_weight += (g.t() @ h).float()
        dist.all_reduce(grad_hidden, group=ctx.group)
        return grad_hidden, grad_weight.to(weight.dtype), None, None, None, None, None, None


def _local_logits(hidden: torch.Tensor, weight: torch.Tensor, real: int) -> torch.Tensor:
    """fp32 logits of this rank's vocab shard, -inf on its padded rows (past the first `real`): outside the
    softmax, so their probability and gradient are zero. A shard of padding only is all -inf; the global
    max and log-sum-exp come from the other shards."""
    logits = (hidden @ weight.t()).float()
    if real < weight.shape[0]:
        logits[:, real:] = float("-inf")
    return logits


def vocab_parallel_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                                 ignore_index: int = -100, chunk: int = 4096, *, vocab_size: int | None = None
                                 ) -> torch.Tensor:
    """The cross_entropy kernel contract (hidden [N,H], weight [V,H], targets [N] -> fp32 [N]; the rows past
    `vocab_size` are padding, outside the softmax) for a weight that is a DTensor sharded on the vocab dim;
    any other weight takes the single-device chunked kernel. The returned per-token losses are whole (the
    same on every tensor-parallel rank)."""
    if not isinstance(weight, DTensor):
        return chunked_cross_entropy(hidden, weight, targets, ignore_index, chunk, vocab_size=vocab_size)
    mesh_dims = [i for i, p in enumerate(weight.placements) if p == Shard(0)]
    if len(mesh_dims) != 1 or weight.shape[0] % weight.device_mesh.size(mesh_dims[0]):
        raise ValueError(f"vocab_parallel_cross_entropy: weight placements {weight.placements} are not one "
                         "even vocab shard")
    dim = mesh_dims[0]
    if isinstance(hidden, DTensor):
        hidden = hidden.full_tensor()
    local = weight.to_local()
    start = weight.device_mesh.get_local_rank(dim) * local.shape[0]
    real = local.shape[0] if vocab_size is None else min(max(vocab_size - start, 0), local.shape[0])
    return _VocabParallelCE.apply(hidden, local, targets, start, real, weight.device_mesh.get_group(dim),
                                  ignore_index, chunk)
