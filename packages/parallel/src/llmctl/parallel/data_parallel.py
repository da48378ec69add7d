"""`ddp`: torch DistributedDataParallel over the mesh's dp group, with the knobs Megatron/llm-zero2all expose.

- Bucketed overlap: grads are all-reduced in `bucket_cap_mb` buckets while backward still runs (DDP's own).
- Accumulation: non-final micro-batches run under `no_sync` (no communication at all; the driver's seam).
- ZeRO-1 (`zero1: true`): torch's ZeroRedundancyOptimizer shards AdamW's state over the dp ranks; the
  checkpoint still holds the whole optimizer state in torch's layout (consolidated on rank 0), so a run saved
  under ZeRO-1 resumes under `single` or plain `ddp` and back.
- Gradient compression (`comm_hook: fp16 | bf16 | powersgd`) from torch's ddp_comm_hooks; the bytes sent per
  step and their ratio to an uncompressed all-reduce are logged with every train record (`comm_mb_per_step`,
  `comm_ratio`). With `comm_hook: none` nothing is registered: exactly torch's DDP.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import torch

from llmctl.core.errors import UserError
from llmctl.core.train.parallelism import DDP as CoreDDP
from llmctl.core.train.parallelism import DDPOptions

from .mesh import Layout, MeshOptions, MeshParallelism, only_data_parallel

COMM_HOOKS = ("none", "fp16", "bf16", "powersgd")


@dataclasses.dataclass
class DataParallelOptions(MeshOptions, DDPOptions):
    zero1: bool = False  # shard optimizer state over the dp ranks (ZeroRedundancyOptimizer)
    comm_hook: str = "none"  # none | fp16 | bf16 | powersgd
    powersgd_rank: int = 1  # PowerSGD matrix_approximation_rank
    powersgd_warm_start: bool = True  # reuse last step's Q as the power iteration's start
    start_powersgd_iter: int = 10  # the first N steps all-reduce plainly (error feedback needs N >= 2)
    gradient_as_bucket_view: bool = False  # grads alias DDP's buckets: one copy less, same numbers

    def validate(self) -> None:
        if self.comm_hook not in COMM_HOOKS:
            from llmctl.core.config import did_you_mean

            raise UserError(f"config key 'parallel.comm_hook': '{self.comm_hook}' is not one of "
                            f"{', '.join(COMM_HOOKS)}{did_you_mean(self.comm_hook, COMM_HOOKS)}")
        if self.comm_hook == "powersgd" and (self.powersgd_rank < 1 or self.start_powersgd_iter < 2):
            raise UserError("config keys 'parallel.powersgd_rank' must be >= 1 and 'parallel.start_powersgd_iter' "
                            ">= 2 (PowerSGD's error feedback and warm start need one plain step first)")


class CommMeter:
    """What a comm hook sends: `sent` bytes against the `dense` bytes a plain all-reduce of the bucket would."""

    def __init__(self, kind: str, state: Any, hook):
        self.kind, self.state, self.hook = kind, state, hook
        self.sent = self.dense = self.steps = 0

    def take(self) -> dict[str, float]:
        """Per-step figures since the last call (the steps of one log interval)."""
        out = {}
        if self.steps:
            out = {"comm_mb_per_step": self.sent / self.steps / 2**20, "comm_ratio": self.dense / self.sent}
        self.sent = self.dense = self.steps = 0
        return out


def metered_hook(meter: CommMeter, bucket):
    """DDP comm hook: run the configured hook on the bucket and count its bytes. fp16/bf16 send 2 bytes an
    element; PowerSGD sends P (n x r) and Q (m x r) per compressed matrix and the rest as is, which its
    state counts (`total_numel_after_compression`), plain all-reduce for its first steps."""
    buf = bucket.buffer()
    numel, size = buf.numel(), buf.element_size()
    powersgd = meter.kind == "powersgd" and meter.state.iter >= meter.state.start_powerSGD_iter
    before = getattr(meter.state, "total_numel_after_compression", 0)
    fut = meter.hook(meter.state, bucket)
    if powersgd:
        meter.sent += (meter.state.total_numel_after_compression - before) * size
    else:
        meter.sent += numel * (2 if meter.kind in ("fp16", "bf16") else size)
    meter.dense += numel * size
    meter.steps += bucket.is_last()
    return fut


class DataParallel(MeshParallelism, CoreDDP):
    name = "ddp"
    Options = DataParallelOptions

    @classmethod
    def check_layout(cls, layout: Layout) -> None:
        only_data_parallel(cls.name, layout)

    def __init__(self, cfg):
        super().__init__(cfg)
        self.meter: CommMeter | None = None

    def parallelize(self, model: torch.nn.Module) -> torch.nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        o = self.options
        ids = [self.device.index] if self.device.type != "cpu" else None
        ddp = DistributedDataParallel(model, device_ids=ids, process_group=self.mesh.group("dp"),
                                      bucket_cap_mb=o.bucket_cap_mb, find_unused_parameters=o.find_unused_parameters,
                                      gradient_as_bucket_view=o.gradient_as_bucket_view)
        if o.comm_hook != "none":
            self.meter = self._comm_hook(o)
            ddp.register_comm_hook(self.meter, metered_hook)
        return ddp

    def _comm_hook(self, o: DataParallelOptions) -> CommMeter:
        from torch.distributed.algorithms.ddp_comm_hooks import default_hooks, powerSGD_hook

        group = self.mesh.group("dp")
        if o.comm_hook == "powersgd":
            state = powerSGD_hook.PowerSGDState(
                process_group=group, matrix_approximation_rank=o.powersgd_rank, warm_start=o.powersgd_warm_start,
                start_powerSGD_iter=o.start_powersgd_iter, use_error_feedback=True, random_seed=self.cfg.train.seed)
            return CommMeter("powersgd", state, powerSGD_hook.powerSGD_hook)
        hook = default_hooks.fp16_compress_hook if o.comm_hook == "fp16" else default_hooks.bf16_compress_hook
        return CommMeter(o.comm_hook, group, hook)

    def extra_log(self) -> dict[str, Any]:
        return self.meter.take() if self.meter is not None else {}

    # ---- ZeRO-1 ----------------------------------------------------------------------------------------
    def build_optimizer(self, params, make_optimizer) -> torch.optim.Optimizer:
        opt = make_optimizer(params)
        if not self.options.zero1:
            return opt
        from torch.distributed.optim import ZeroRedundancyOptimizer

        accepted = inspect.signature(type(opt).__init__).parameters
        defaults = {k: v for k, v in opt.defaults.items() if k in accepted}
        groups = [{"params": g["params"], **{k: v for k, v in g.items()
                                             if k != "params" and v != opt.defaults.get(k)}} for g in opt.param_groups]
        return ZeroRedundancyOptimizer(groups, optimizer_class=type(opt), process_group=self.mesh.group("dp"),
                                       **defaults)

    def optimizer_state_dict(self, model, optimizer) -> dict[str, Any] | None:
        if not self.options.zero1:
            return optimizer.state_dict()
        optimizer.consolidate_state_dict(to=0)  # a collective: every rank calls it, rank 0 receives
        return optimizer.state_dict() if self.rank == 0 else None
