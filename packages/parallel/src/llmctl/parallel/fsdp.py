"""`fsdp2`: torch's `fully_shard` (FSDP2) per transformer block, then the root, over the mesh's data-parallel dims.

Parameters, grads and AdamW state are sharded over `dp_shard` ranks (HSDP when `dp_replicate` > 1: shard within
a group, replicate across groups). `param_dtype`/`reduce_dtype` form the MixedPrecisionPolicy (fp32 master
weights stay in the shards); `reshard_after_forward` trades memory for one all-gather in backward.
Checkpoints are written in the native layout: the full model state and a full, index-keyed torch optimizer
state dict gathered to rank 0 (`torch.distributed.checkpoint.state_dict`, cpu offload), so a run saved here
resumes under `single` or `ddp` and back.
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


class FSDP2(MeshParallelism):
    name = "fsdp2"
    Options = FSDP2Options

    @classmethod
    def check_layout(cls, layout: Layout) -> None:
        only_data_parallel(cls.name, layout)

    def _dp_mesh(self):
        return self.mesh.mesh["dp_replicate", "dp_shard"] if self.layout.dp_replicate > 1 else self.mesh.dp_shard

    def parallelize(self, model: torch.nn.Module) -> torch.nn.Module:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        o = self.options
        kw = {"mesh": self._dp_mesh(), "reshard_after_forward": o.reshard_after_forward,
              "mp_policy": MixedPrecisionPolicy(param_dtype=DTYPES[o.param_dtype], reduce_dtype=DTYPES[o.reduce_dtype])}
        for block in getattr(model, "layers", []):
            fully_shard(block, **kw)
        return fully_shard(model, **kw)

    @contextlib.contextmanager
    def no_sync(self, model: torch.nn.Module):
        """Accumulate unsharded grads locally; the last micro-batch reduce-scatters the sum."""
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)

    def clip_grad_norm(self, model, params, max_norm: float) -> torch.Tensor:
        """The norm over every shard (a DTensor reduction), clipped in place on the local shards."""
        grads = [p.grad for p in params if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads, foreach=True)
        norm = norm.full_tensor() if hasattr(norm, "full_tensor") else norm
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
