"""`fsdp2`: torch's `fully_shard` (FSDP2) per transformer block, then the root, over the mesh's data-parallel dims.

Parameters, grads and AdamW state are sharded over `dp_shard` ranks (HSDP when `dp_replicate` > 1: shard within
a group, replicate across groups). `param_dtype`/`reduce_dtype` form the MixedPrecisionPolicy (fp32 master
weights stay in the shards); `reshard_after_forward` trades memory for one all-gather in backward.
Checkpoints are written in the native layout: the full model state and a full, index-keyed torch optimizer
state dict gathered to rank 0 (`torch.distributed.checkpoint.state_dict`, cpu offload), so a run saved here
resumes under `single` or `ddp` and back.

`shard_model` and `sharded_grad_norm` are shared with the model-parallel strategy, whose data parallelism is
this same `fully_shard`, applied over the dp (x cp) mesh dim after tensor parallelism (torchtitan's 2-D/3-D
composition: the parameters become DTensors over (dp, tp)). `parallel.strategy: fsdp2` with tp/pp/cp > 1 runs
that strategy (model_parallel.FSDP2Strategy); this class is the pure data-parallel case, with HSDP.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import torch

from llmctl.core.errors import UserError

from .mesh import Layout, MeshOptions, MeshParallelism, only_data_parallel

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "none": None}


@dataclasses.dataclass
class FSDP2Options(MeshOptions):
    param_dtype: str = "none"  # dtype of the all-gathered params in forward/backward (none: as stored)
    reduce_dtype: str = "none"  # dtype of the gradient reduce-scatter (none: the param dtype)
    reshard_after_forward: bool = True  # free gathered params after forward (all-gather again in backward)

    def validate(self) -> None:
        for key in ("param_dtype", "reduce_dtype"):
            if getattr(self, key) not in DTYPES:
                raise UserError(f"config key 'parallel.{key}': '{getattr(self, key)}' is not one of "
                                f"{', '.join(DTYPES)}")


def mixed_precision(options: FSDP2Options):
    from torch.distributed.fsdp import MixedPrecisionPolicy

    return MixedPrecisionPolicy(param_dtype=DTYPES[options.param_dtype], reduce_dtype=DTYPES[options.reduce_dtype])


def shard_model(root: torch.nn.Module, layers, mesh, options: FSDP2Options, reshard_after_forward: bool | None = None
                ) -> torch.nn.Module:
    """`fully_shard` each transformer block (one all-gather / reduce-scatter per block, overlapped by torch's
    prefetching), then `root` for the rest (embedding, final norm, LM head). `layers`: the blocks (a
    ModuleList's or a pipeline stage's ModuleDict's values, under any activation-checkpoint wrapper). The
    reduce-scatter *averages* over `mesh`'s ranks (torch's default), which the strategy's grad_mean_divisor
    says."""
    from torch.distributed.fsdp import fully_shard

    reshard = options.reshard_after_forward if reshard_after_forward is None else reshard_after_forward
    kw = {"mesh": mesh, "reshard_after_forward": reshard, "mp_policy": mixed_precision(options)}
    for block in layers:
        fully_shard(block, **kw)
    return fully_shard(root, **kw)


def sharded_grad_norm(grads: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """The 2-norm of this rank's model part's grads, whatever mixes of plain tensors and DTensors (over
    (dp,), (tp,) or (dp, tp) meshes, any placements) they are: torch's get_total_norm per kind of layout,
    each reduced to a whole norm over its mesh, then combined."""
    kinds: dict = {}
    for g in grads:
        key = (g.device_mesh, tuple(g.placements)) if hasattr(g, "device_mesh") else None
        kinds.setdefault(key, []).append(g)
    norms = []
    for group in kinds.values():
        norm = torch.nn.utils.get_total_norm(group, 2.0, foreach=True)
        norms.append(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
    if len(norms) == 1:
        return norms[0]
    return torch.stack([n.float() for n in norms]).norm() if norms else torch.zeros((), device=device)


@contextlib.contextmanager
def gradient_sync_off(module: torch.nn.Module):
    """FSDP2's no_sync: accumulate unsharded grads locally; the next synced backward reduce-scatters the sum."""
    module.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        module.set_requires_gradient_sync(True)


class FSDP2(MeshParallelism):
    name = "fsdp2"
    Options = FSDP2Options

    @classmethod
    def check_layout(cls, layout: Layout) -> None:
        only_data_parallel(cls.name, layout)

    def _dp_mesh(self):
        return self.mesh.mesh["dp_replicate", "dp_shard"] if self.layout.dp_replicate > 1 else self.mesh.dp_shard

    def parallelize(self, model: torch.nn.Module) -> torch.nn.Module:
        return shard_model(model, getattr(model, "layers", []), self._dp_mesh(), self.options)

    def no_sync(self, model: torch.nn.Module):
        """Accumulate unsharded grads locally; the last micro-batch reduce-scatters the sum."""
        return gradient_sync_off(model)

    def clip_grad_norm(self, model, params, max_norm: float) -> torch.Tensor:
        """The norm over every shard (a DTensor reduction), clipped in place on the local shards."""
        norm = sharded_grad_norm([p.grad for p in params if p.grad is not None], self.device)
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm, foreach=True)
        return norm

    # ---- state in the native layout -------------------------------------------------------------------
    def _options(self, **kw):
        from torch.distributed.checkpoint.state_dict import StateDictOptions

        return StateDictOptions(full_state_dict=True, **kw)

    def model_state_dict(self, model) -> dict[str, torch.Tensor]:
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        return get_model_state_dict(model, options=self._options(cpu_offload=True))

    def load_model_state_dict(self, model, state, strict: bool = True) -> None:
        from torch.distributed.checkpoint.state_dict import set_model_state_dict

        result = set_model_state_dict(model, state, options=self._options(strict=strict))
        if not strict and result.unexpected_keys:
            raise UserError(f"checkpoint has weights the model does not: {', '.join(result.unexpected_keys[:5])}")

    def _names(self, model, optimizer) -> list[str]:
        """Parameter names in the optimizer's order: torch's index keys of the native optimizer state."""
        by_id = {id(p): n for n, p in model.named_parameters()}
        return [by_id[id(p)] for g in optimizer.param_groups for p in g["params"]]

    def optimizer_state_dict(self, model, optimizer) -> dict[str, Any]:
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        full = get_optimizer_state_dict(model, optimizer, options=self._options(cpu_offload=True))
        index = {n: i for i, n in enumerate(self._names(model, optimizer))}
        return {"state": {index[n]: v for n, v in full.get("state", {}).items()},
                "param_groups": [{**g, "params": [index[n] for n in g["params"]]} for g in full.get("param_groups", [])]}

    def load_optimizer_state_dict(self, model, optimizer, state) -> None:
        from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

        names = self._names(model, optimizer)
        full = {"state": {names[int(i)]: v for i, v in state["state"].items()},
                "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in state["param_groups"]]}
        set_optimizer_state_dict(model, optimizer, full, options=self._options())
