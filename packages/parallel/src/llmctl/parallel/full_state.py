"""Checkpoint state of a model-parallel run as the *unsharded* model's state, so any layout can load it.

A save gathers every parameter (and its AdamW moments) to whole tensors with native names — DTensor shards
over TP are all-gathered, pipeline stages send theirs to the writer — and the writer saves them in its one
`mp_rank_00` folder in exactly the format a one-process run writes: the optimizer state is torch's own
(integer keys in the unsharded model's parameter order), plus `llmctl_param_names` naming each entry. So a
checkpoint saved at TP2·PP2 resumes at TP1·PP1, at TP2, in `single`, and loads in `generate`/`eval`. A load
slices each whole tensor to the local shard (`distribute_tensor` with no communication).

Any DTensor layout works, FSDP2 over TP's shards included (placements like `(_StridedShard(0), Shard(0))`
over (dp, tp)): the save is `full_tensor`, the load `distribute_tensor(..., src_data_rank=None)`, which cuts
the local piece with no communication. (torch 2.13's `set_model_state_dict(full_state_dict=True)` scatters
instead and asserts on uneven strided shards, e.g. 3 rows of a TP shard over 2 dp ranks.)

Why not per-rank `mp_rank_{tp}_{pp}` shards: resharding on load would have to re-assemble them anyway, and
the models this engine trains on one node fit the writer's host memory whole.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor, distribute_tensor

from llmctl.core.errors import UserError
from llmctl.core.train.optim import PARAM_NAMES_KEY as NAMES_KEY


def whole(t: torch.Tensor) -> torch.Tensor:
    """The full tensor of a (possibly sharded) DTensor, on the CPU (collective over its mesh)."""
    return (t.full_tensor() if isinstance(t, DTensor) else t).detach().cpu()


def local_part(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`full` laid out like `like`: the local shard as a DTensor when `like` is one (sliced locally)."""
    full = full.to(device=like.device, dtype=like.dtype)
    if isinstance(like, DTensor):
        return distribute_tensor(full, like.device_mesh, like.placements, src_data_rank=None)
    return full


def gather_to_writer(part: dict | None) -> list[dict]:
    """Every contributing rank's `part` (None from the others) on global rank 0; [] elsewhere."""
    parts = [None] * dist.get_world_size() if dist.get_rank() == 0 else None
    dist.gather_object(part, parts, dst=0)
    return [p for p in parts if p is not None] if parts is not None else []


# ---- the model ---------------------------------------------------------------------------------------------
def full_model_state(module: torch.nn.Module, contributes: bool) -> dict[str, torch.Tensor]:
    """Whole, native-named state of every stage on rank 0 ({} elsewhere). Every rank calls this;
    `contributes`: this rank sends its stage (one rank per stage)."""
    state = {k: whole(v) for k, v in module.state_dict().items()}
    merged: dict[str, torch.Tensor] = {}
    for part in gather_to_writer(state if contributes else None):
        merged.update(part)
    return merged


def load_full_model_state(module: torch.nn.Module, state: dict[str, torch.Tensor], known: Iterable[str],
                          strict: bool = True) -> None:
    """Load the local part of the unsharded `state`. Names of other pipeline stages (in `known`, the
    unsharded model's names) are not unexpected; names the model never had are."""
    own = module.state_dict()
    unexpected = sorted(set(state) - set(known))
    missing = sorted(set(own) - set(state))
    if unexpected or (strict and missing):
        what = f"weights the model does not have: {', '.join(unexpected[:5])}" if unexpected else \
            f"no weights for {', '.join(missing[:5])}"
        raise UserError(f"checkpoint has {what}")
    with torch.no_grad():
        for name, target in own.items():
            if name in state:
                part = local_part(state[name], target)
                (target.to_local() if isinstance(target, DTensor) else target).copy_(
                    part.to_local() if isinstance(part, DTensor) else part)


# ---- the optimizer -----------------------------------------------------------------------------------------
def full_optimizer_state(optimizer: torch.optim.Optimizer, name_of: dict[int, str], order: list[str],
                         contributes: bool) -> dict[str, Any]:
    """torch-format optimizer state of the unsharded model on rank 0 ({} elsewhere): parameter indices
    follow `order` (the unsharded model's parameter names) within each param group, as a one-process
    optimizer over the same groups numbers them. `name_of`: id(param) -> native name."""
    groups, state = [], {}
    for group in optimizer.param_groups:
        names = [name_of[id(p)] for p in group["params"]]
        groups.append({**{k: v for k, v in group.items() if k != "params"}, "names": names})
        for p, name in zip(group["params"], names):
            if p in optimizer.state:
                state[name] = {k: whole(v) for k, v in optimizer.state[p].items()}
    parts = gather_to_writer({"groups": groups, "state": state} if contributes else None)
    if not parts:
        return {}
    rank_of = {n: i for i, n in enumerate(order)}
    merged_state = {k: v for part in parts for k, v in part["state"].items()}
    out_groups, out_state, names_per_group, index = [], {}, [], 0
    for g, group in enumerate(parts[0]["groups"]):
        names = sorted((n for part in parts for n in part["groups"][g]["names"]), key=rank_of.__getitem__)
        ids = list(range(index, index + len(names)))
        index += len(names)
        out_state.update({i: merged_state[n] for i, n in zip(ids, names) if n in merged_state})
        out_groups.append({**{k: v for k, v in group.items() if k != "names"}, "params": ids})
        names_per_group.append(names)
    return {"state": out_state, "param_groups": out_groups, NAMES_KEY: names_per_group}


def unsharded_group_names(optimizer: torch.optim.Optimizer, name_of: dict[int, str], order: list[str]
                          ) -> list[list[str]]:
    """The parameter names of each param group of the unsharded model's optimizer, in its order (every
    rank's groups gathered: a pipeline stage holds only its own). Collective over the world."""
    mine = [[name_of[id(p)] for p in g["params"]] for g in optimizer.param_groups]
    everyone = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, mine)
    rank_of = {n: i for i, n in enumerate(order)}
    return [sorted({n for ranks in everyone for n in ranks[g]}, key=rank_of.__getitem__)
            for g in range(len(mine))]


def load_full_optimizer_state(optimizer: torch.optim.Optimizer, saved: dict[str, Any],
                              name_of: dict[int, str], group_names: list[list[str]] | None = None) -> None:
    """Load the local part of `full_optimizer_state`'s output into this rank's optimizer. A state saved by
    a one-process (or DDP) run has no names; `group_names` (from `unsharded_group_names`) supplies them."""
    if NAMES_KEY not in saved:
        if group_names is None or [len(n) for n in group_names] != [len(g["params"]) for g in
                                                                    saved["param_groups"]]:
            raise UserError("checkpoint's optimizer state does not match this model's parameter groups")
        saved = {**saved, NAMES_KEY: group_names}
    by_name = {}
    for group, names in zip(saved["param_groups"], saved[NAMES_KEY]):
        for i, name in zip(group["params"], names):
            by_name[name] = saved["state"].get(i)
    local_state, local_groups, index = {}, [], 0
    for g, group in enumerate(optimizer.param_groups):
        ids = []
        for p in group["params"]:
            entry = by_name.get(name_of[id(p)])
            if entry is not None:
                local_state[index] = {k: v if k == "step" else local_part(v, p) for k, v in entry.items()}
            ids.append(index)
            index += 1
        hyper = {k: v for k, v in saved["param_groups"][g].items() if k != "params"}
        local_groups.append({**copy.deepcopy(hyper), "params": ids})
    optimizer.load_state_dict({"state": local_state, "param_groups": local_groups})
