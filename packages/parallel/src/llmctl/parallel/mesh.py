"""The dp x tp x pp x cp device mesh every llmctl-parallel strategy runs on, and the checks that refuse a bad
layout before any process group starts (so a wrong TP or GBS is one line, exit 2, not a hang in a collective).

API (PART B's TP/PP/CP strategies build on it):

- `MeshOptions(StrategyOptions)`: the `parallel:` keys of the layout. A strategy's Options subclass it.
  `tp`, `pp`, `cp` (default 1); `dp` is derived (world / (tp*pp*cp)) and, when given, must match;
  `dp_replicate` splits DP into replicate x shard groups (HSDP; 1 = shard across all of DP, what FSDP2 does,
  and what DDP replicates over); `num_layer_list` ("5,7" or [5, 7]: Megatron's --num-layer-list, layers per
  pipeline stage, must sum to model.num_layers).
- `plan_layout(cfg, options, world_size) -> Layout`: torch-free and collective-free validation; raises
  `UserError` for world size != dp*tp*pp*cp, GBS not divisible by DP*MBS, TP not dividing heads or KV heads,
  PP > layers, a --num-layer-list not summing to the layers (or not PP entries long).
  `Layout` has the sizes, `dp_shard`, `layers_per_stage` (tuple, one entry per PP stage) and
  `stage_layers(pp_rank) -> range` (the global layer indices of that stage).
- `build_mesh(layout, device_type) -> ParallelMesh`: `init_device_mesh` over dims
  `("pp", "dp_replicate", "dp_shard", "cp", "tp")` (tp fastest-varying: TP peers are neighbouring ranks, on
  one node), every dim present even at size 1 so code never asks "is there a tp dim". Needs the default
  process group (`DistributedParallelism` starts it from torchrun's environment).
- `ParallelMesh`: `.mesh` (the 5-D DeviceMesh); 1-D submeshes `.pp`, `.tp`, `.cp`, `.dp_replicate`,
  `.dp_shard`, and flattened ones `.dp` (replicate x shard: what batches and losses are split over) and
  `.dp_cp` (shard x cp flattened with replicate: the ranks that hold different data, over which grads are
  reduced when CP is on); `rank(name)`, `size(name)`, `group(name)` (a ProcessGroup) for any of those names;
  shortcuts `dp_rank`, `dp_size`, `tp_rank`, `pp_rank`, `cp_rank`.
- `MeshParallelism(DistributedParallelism)`: base of llmctl-parallel's strategies: parses options, runs
  `preflight` (plan_layout + the strategy's own `check_layout`) before the group starts, then builds
  `self.mesh`; dp_rank/dp_size come from the mesh, not the world.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from llmctl.core.config import from_dict
from llmctl.core.errors import UserError
from llmctl.core.pipeline_layers import stage_layer_counts
from llmctl.core.train.parallelism import DistributedParallelism, StrategyOptions, torchrun_world

DIMS = ("pp", "dp_replicate", "dp_shard", "cp", "tp")


@dataclasses.dataclass
class MeshOptions(StrategyOptions):
    tp: int = 1  # tensor-parallel size (the lab's TP)
    pp: int = 1  # pipeline-parallel size (PP)
    cp: int = 1  # context-parallel size (CP)
    dp: int | None = None  # derived from the world size; set it only to assert the layout
    dp_replicate: int = 1  # DP ranks in replicate groups (HSDP); dp / dp_replicate shard within a group
    num_layer_list: Any = None  # Megatron --num-layer-list: "5,7" or [5, 7], layers per pipeline stage


@dataclasses.dataclass(frozen=True)
class Layout:
    world: int
    dp: int
    tp: int
    pp: int
    cp: int
    dp_replicate: int
    layers_per_stage: tuple[int, ...]

    @property
    def dp_shard(self) -> int:
        return self.dp // self.dp_replicate

    def shape(self) -> tuple[int, ...]:
        return (self.pp, self.dp_replicate, self.dp_shard, self.cp, self.tp)

    def stage_layers(self, pp_rank: int) -> range:
        start = sum(self.layers_per_stage[:pp_rank])
        return range(start, start + self.layers_per_stage[pp_rank])

    def describe(self) -> str:
        return f"dp {self.dp} x tp {self.tp} x pp {self.pp} x cp {self.cp}"


def plan_layout(cfg, options: MeshOptions, world_size: int) -> Layout:
    """Check the layout against the config and the world size; no torch, no collectives."""
    for key in ("tp", "pp", "cp", "dp_replicate"):
        if getattr(options, key) < 1:
            raise UserError(f"config key 'parallel.{key}' must be >= 1, got {getattr(options, key)}")
    tp, pp, cp = options.tp, options.pp, options.cp
    model_parallel = tp * pp * cp
    if world_size % model_parallel or (options.dp is not None and options.dp * model_parallel != world_size):
        dp = options.dp if options.dp is not None else f"{world_size / model_parallel:g}"
        raise UserError(f"world size {world_size} != dp {dp} x tp {tp} x pp {pp} x cp {cp}: start "
                        f"dp x {model_parallel} processes (torchrun --nproc-per-node) or change TP/PP/CP")
    dp = world_size // model_parallel
    if dp % options.dp_replicate:
        raise UserError(f"parallel.dp_replicate {options.dp_replicate} does not divide the data-parallel size {dp}")
    m = cfg.model
    if m.num_heads % tp or m.kv_heads % tp:
        raise UserError(f"parallel.tp {tp} must divide model.num_heads {m.num_heads} and the KV heads "
                        f"{m.kv_heads} (each TP rank holds whole query and key/value heads)")
    layers = tuple(stage_layer_counts(m.num_layers, pp, options.num_layer_list, uneven_default=True))
    cfg.check(dp)  # GBS divisible by DP x MBS, and the config's other cross-section checks
    return Layout(world_size, dp, tp, pp, cp, options.dp_replicate, layers)


class ParallelMesh:
    """The device mesh and its named submeshes (see the module docstring)."""

    def __init__(self, layout: Layout, mesh):
        self.layout, self.mesh = layout, mesh
        self._sub = {name: mesh[name] for name in DIMS}
        self._sub["dp"] = mesh["dp_replicate", "dp_shard"]._flatten("dp")
        self._sub["dp_cp"] = mesh["dp_replicate", "dp_shard", "cp"]._flatten("dp_cp")

    def __getitem__(self, name: str):
        if name not in self._sub:
            raise KeyError(f"no mesh dim {name!r}; have {', '.join(self._sub)}")
        return self._sub[name]

    def __getattr__(self, name: str):
        if name.startswith("_") or name not in self.__dict__.get("_sub", {}):
            raise AttributeError(name)
        return self._sub[name]

    def rank(self, name: str) -> int:
        return self[name].get_local_rank()

    def size(self, name: str) -> int:
        return self[name].size()

    def group(self, name: str):
        return self[name].get_group()

    dp_rank = property(lambda self: self.rank("dp"))
    dp_size = property(lambda self: self.size("dp"))
    tp_rank = property(lambda self: self.rank("tp"))
    pp_rank = property(lambda self: self.rank("pp"))
    cp_rank = property(lambda self: self.rank("cp"))

    def __repr__(self) -> str:
        return f"ParallelMesh({self.layout.describe()}, {self.mesh})"


def build_mesh(layout: Layout, device_type: str) -> ParallelMesh:
    """The 5-D mesh over the started default process group (its backend: gloo, nccl or hccl)."""
    from torch.distributed.device_mesh import init_device_mesh

    return ParallelMesh(layout, init_device_mesh(device_type, layout.shape(), mesh_dim_names=DIMS))


class MeshParallelism(DistributedParallelism):
    """A strategy over the mesh: the layout is checked (on every rank, identically) before the group starts."""

    name = "mesh"
    Options = MeshOptions

    @classmethod
    def preflight(cls, cfg, world_size: int) -> Layout:
        layout = plan_layout(cfg, from_dict(cls.Options, cfg.parallel, prefix="parallel"), world_size)
        cls.check_layout(layout)
        return layout

    @classmethod
    def check_layout(cls, layout: Layout) -> None:
        """A strategy refuses the layouts it cannot run (e.g. pure data parallelism with tp > 1)."""

    def __init__(self, cfg):
        self.layout = self.preflight(cfg, torchrun_world()[1])
        super().__init__(cfg)
        self.mesh = build_mesh(self.layout, self.device.type)

    @property
    def dp_rank(self) -> int:
        return self.mesh.dp_rank

    @property
    def dp_size(self) -> int:
        return self.layout.dp

    def describe(self) -> str:
        return f"{self.name} (world {self.world_size}: {self.layout.describe()})"


def only_data_parallel(name: str, layout: Layout) -> None:
    """The refusal data-parallel-only strategies share."""
    if layout.tp * layout.pp * layout.cp != 1:
        raise UserError(f"parallel.strategy {name} is data parallelism only; tp/pp/cp = "
                        f"{layout.tp}/{layout.pp}/{layout.cp} need a strategy that applies them")
