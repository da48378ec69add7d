"""The Parallelism seam of the training driver: *how* the model is spread (torchtitan's parallelize function).

A Parallelism starts the process group from torchrun's environment (backend from `nn/device.py`), says
which rank this is in the data-parallel group (`dp_rank`, `dp_size`: what the sampler, accumulation and
loss reductions use, never the world size), wraps the model (`parallelize`), gives the grad-sync context for
accumulation, clips over possibly sharded grads, and saves/loads state. Exactly one rank writes logs.

Built-in: `single` (one process) and `ddp` (torch DistributedDataParallel). `auto` picks ddp under torchrun
(WORLD_SIZE > 1) and single otherwise. FSDP2/TP/PP/CP register more from llmctl-parallel.
Strategies register on the plugin bus: `register_parallelisms(register)` -> `register(name, Class)` or
`register(name, "module:Class")`; the strategy's own keys live in the config's `parallel:` section.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
from typing import Any, Iterator

import torch
import torch.distributed as dist

from ..config import from_dict
from ..errors import UserError
from ..nn.device import dist_backend, pick_device
from .config import TrainConfig


@dataclasses.dataclass
class StrategyOptions:
    """Keys of `parallel:` every strategy accepts; a strategy with more subclasses this."""

    strategy: str = "auto"
    timeout_minutes: float = 30.0  # collective timeout: a dead peer fails the run instead of hanging it


def torchrun_world() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) outside it."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


class Parallelism:
    """One process, no collectives. Subclasses that span processes call `init_process_group`."""

    name = "single"
    Options: type = StrategyOptions

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg
        self.options = from_dict(self.Options, cfg.parallel, prefix="parallel")
        self.rank, self.world_size, self.local_rank = 0, 1, 0
        self.device = pick_device(None if cfg.train.device == "auto" else cfg.train.device, 0)

    # ---- who am I --------------------------------------------------------------------------------------
    @property
    def dp_rank(self) -> int:
        return self.rank

    @property
    def dp_size(self) -> int:
        return self.world_size

    @property
    def is_log_writer(self) -> bool:
        """The one rank that writes logs, progress and checkpoint metadata."""
        return self.rank == 0

    def describe(self) -> str:
        return f"{self.name} (world {self.world_size}, data-parallel {self.dp_size})"

    @classmethod
    def preflight(cls, cfg: TrainConfig, world_size: int) -> Any:
        """Check `cfg` against `world_size` before any process group starts (and before `llmctl pretrain
        --nproc-per-node` launches torchrun): a bad layout is one UserError, not a hang in a collective."""
        from_dict(cls.Options, cfg.parallel, prefix="parallel")
        cfg.check(world_size)

    # ---- the model -------------------------------------------------------------------------------------
    def parallelize(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    def unwrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The module with native parameter names (under any wrapper `parallelize` added)."""
        return model

    def build_optimizer(self, params: list[torch.nn.Parameter], make_optimizer) -> torch.optim.Optimizer:
        """The optimizer over `params`; `make_optimizer(params)` builds the driver's (AdamW with its groups).
        A strategy that shards optimizer state (ZeRO-1) wraps or rebuilds it here."""
        return make_optimizer(params)

    def reshape(self, trainer: Any) -> None:
        """A stage of a run in stages begins: `trainer.mbs`, `trainer.seq` and `trainer.accum` may differ from
        what `parallelize` saw. A strategy whose schedule was built for fixed shapes (a pipeline) rebuilds it."""

    def extra_log(self) -> dict[str, Any]:
        """Strategy metrics merged into each logged train record (e.g. gradient compression ratio),
        summarising the steps since the last call."""
        return {}

    def no_sync(self, model: torch.nn.Module) -> contextlib.AbstractContextManager:
        """Context for a micro-batch that is not the last of the step: no gradient communication."""
        return contextlib.nullcontext()

    def clip_grad_norm(self, model: torch.nn.Module, params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
        """Total grad norm over every rank's (possibly sharded) grads; clips in place to `max_norm`."""
        return torch.nn.utils.clip_grad_norm_(params, max_norm)

    def forward_backward(self, trainer: Any, step: int, batches: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        """Run every micro-batch of the step (forward + backward) and return the sum of their packed
        [loss sum, count, metric sums, metric counts] on this rank. A pipeline strategy overrides this with
        its schedule (micro-batches flow through the stages; the last stage computes the task's loss)."""
        sums = [trainer.micro_batch(step, b, last=i == len(batches) - 1) for i, b in enumerate(batches)]
        return torch.stack(sums).sum(0)

    # ---- reductions ------------------------------------------------------------------------------------
    def sum_over_dp(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum a tensor of per-rank sums (loss, token counts, metrics) over the data-parallel group."""
        return tensor

    @property
    def grad_mean_divisor(self) -> int:
        """How many ranks the grad reduction averages over: grads are scaled by this / global count."""
        return self.dp_size

    def barrier(self) -> None:
        pass

    # ---- state -----------------------------------------------------------------------------------------
    def model_state_dict(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        """Full model state with native names (what the checkpoint writer saves)."""
        return self.unwrap(model).state_dict()

    def load_model_state_dict(self, model: torch.nn.Module, state: dict[str, torch.Tensor],
                              strict: bool = True) -> None:
        result = self.unwrap(model).load_state_dict(state, strict=strict)
        if not strict and result.unexpected_keys:
            raise UserError(f"checkpoint has weights the model does not: {', '.join(result.unexpected_keys[:5])}")

    def optimizer_state_dict(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        return optimizer.state_dict()

    def load_optimizer_state_dict(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                                  state: dict[str, Any]) -> None:
        optimizer.load_state_dict(state)

    def checkpoint_shard(self) -> str | None:
        """The `mp_rank_*` folder this rank writes in a checkpoint, or None when another rank writes its
        state (replicated data parallelism: rank 0 writes for everyone)."""
        return "mp_rank_00" if self.rank == 0 else None

    def checkpoint_read_shard(self) -> str:
        """The `mp_rank_*` folder this rank loads its state from."""
        return "mp_rank_00"

    def close(self, finished: bool = True) -> None:
        """End the strategy; `finished` is False when the run is leaving on an error."""


class DistributedParallelism(Parallelism):
    """Base for strategies over a torch.distributed process group started from torchrun's environment."""

    def __init__(self, cfg: TrainConfig):
        super().__init__(cfg)
        self.rank, self.world_size, self.local_rank = torchrun_world()
        self.device = pick_device(None if cfg.train.device == "auto" else cfg.train.device, self.local_rank)
        self.owns_group = not dist.is_initialized()
        if self.owns_group:
            if "MASTER_ADDR" not in os.environ:
                raise UserError(f"parallel.strategy {self.name} needs torchrun's environment (RANK, WORLD_SIZE, "
                                "MASTER_ADDR); launch with `torchrun --nproc-per-node N -m llmctl.cli pretrain …`")
            if self.device.type != "cpu":
                getattr(torch, self.device.type).set_device(self.device)
            timeout = datetime.timedelta(minutes=self.options.timeout_minutes)
            dist.init_process_group(dist_backend(self.device.type), store=_attempt_store(timeout),
                                    rank=self.rank, world_size=self.world_size, timeout=timeout)

    def sum_over_dp(self, tensor: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(tensor)
        return tensor

    def barrier(self) -> None:
        dist.barrier()

    def close(self, finished: bool = True) -> None:
        """After a finished run every rank meets once more, so no collective is still in flight when the group
        is destroyed (gloo aborts the process at exit otherwise). A run leaving on an error skips the barrier:
        its peers may be gone."""
        if self.owns_group and dist.is_initialized():
            if finished:
                dist.barrier()
            dist.destroy_process_group()


@dataclasses.dataclass
class DDPOptions(StrategyOptions):
    bucket_cap_mb: float = 25.0  # gradient buckets all-reduced while backward still runs
    find_unused_parameters: bool = False


class DDP(DistributedParallelism):
    """torch DistributedDataParallel: every rank holds the whole model; grads are averaged in buckets that
    overlap backward, and not at all on the non-final micro-batches of an accumulation (`no_sync`)."""

    name = "ddp"
    Options = DDPOptions

    def parallelize(self, model: torch.nn.Module) -> torch.nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type != "cpu" else None
        return DistributedDataParallel(model, device_ids=ids, bucket_cap_mb=self.options.bucket_cap_mb,
                                       find_unused_parameters=self.options.find_unused_parameters)

    def unwrap(self, model: torch.nn.Module) -> torch.nn.Module:
        return getattr(model, "module", model)

    def no_sync(self, model: torch.nn.Module):
        return model.no_sync()


def _attempt_store(timeout: datetime.timedelta) -> dist.Store:
    """torchrun's store, under a prefix per restart attempt. torchrun keeps one store across `--max-restarts`
    rounds, and subgroups (a device mesh's) are named the same every round: without the prefix, restarted
    gloo workers would read the dead workers' addresses and never connect."""
    from torch.distributed.rendezvous import rendezvous

    store, _, _ = next(rendezvous("env://", int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]),
                                  timeout=timeout))
    return dist.PrefixStore(f"attempt_{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


def resolve_strategy(cfg: TrainConfig, world_size: int | None = None) -> str:
    """`auto`: model_parallel when parallel.tp/pp/cp ask for it, ddp when more than one process runs (torchrun
    started them, or `world_size` will: the launcher's check before it execs torchrun), else single."""
    name = cfg.strategy
    if name != "auto":
        return name
    if any(int(cfg.parallel.get(key, 1) or 1) > 1 for key in ("tp", "pp", "cp")):
        return "model_parallel"
    return "ddp" if (torchrun_world()[1] if world_size is None else world_size) > 1 else "single"


def iter_dp_positions(start: int, global_batch: int, dp_rank: int, dp_size: int) -> Iterator[int]:
    """This data-parallel rank's sample indices from data position `start`: every global batch is cut into
    `dp_size` contiguous shards. The data position is the whole resume state of the data."""
    per_rank = global_batch // dp_size
    base = start + dp_rank * per_rank
    while True:
        yield from range(base, base + per_rank)
        base += global_batch
