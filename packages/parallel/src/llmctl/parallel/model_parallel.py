"""The model-parallel strategy: TP (+SP), PP and CP on the mesh, with data parallelism over the rest.

`parallel.strategy: tp | pp | cp | model_parallel` (one strategy; the layout keys `tp`, `pp`, `cp` decide what
is applied, in torchtitan's order: cut pipeline stages, tensor-parallelise each, wrap for context
parallelism). Data parallelism is torch's own FSDP2, composed as torchtitan does for 2-D/3-D layouts:
after TP, `fully_shard` each block and the root (a pipeline stage's StageModule under PP) over the `dp_cp`
mesh dim (DP replicas and CP ranks: the ranks whose grads are partial over different tokens), so the
parameters become DTensors over (dp_cp, tp) and grads are reduce-scattered once per step, after the last
micro-batch (`no_sync`; under PP torch's schedule drives FSDP's sync itself). The reduce-scatter averages
over `dp_cp`, which is the `grad_mean_divisor`. `param_dtype`, `reduce_dtype` and `reshard_after_forward`
are fsdp2's keys (a pipeline stage keeps its parameters gathered between micro-batches, torchtitan's default
under PP). With one dp_cp rank nothing is wrapped. `parallel.strategy: fsdp2` with tp/pp/cp > 1 is this
strategy (`FSDP2Strategy`, at the end).

Losses are counted once: TP and CP ranks hold the same whole per-token loss (vocab-parallel CE returns whole
losses; the CP wrapper gathers them), and only the last pipeline stage has a loss; `sum_over_dp` keeps the
sums of TP rank 0 and CP rank 0 and sums over the world. The grad norm is the norm of the whole model's
grads: DTensor shards are reduced over their (dp_cp, tp) mesh, stage norms summed over PP.

Checkpoints hold the unsharded state on the writer (see full_state.py), so they reshard on load: the whole
tensors are gathered from any DTensor layout (full_tensor) and sliced back without communication.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor

from llmctl.core.config import from_dict
from llmctl.core.errors import UserError

from . import full_state
from .context_parallel import ContextParallel, local_positions
from .fsdp import DTYPES, FSDP2, FSDP2Options, gradient_sync_off, shard_model, sharded_grad_norm
from .mesh import Layout, MeshParallelism
from .pipeline import Pipeline, PipelinedModel, StageModule, check_pp, cut_stage, stage_inputs
from .tensor_parallel import apply_tensor_parallel, check_tp


@dataclasses.dataclass
class ModelParallelOptions(FSDP2Options):  # fsdp2's keys shape the data-parallel sharding
    sequence_parallel: bool = True  # Megatron --sequence-parallel: norms and residuals hold sequence shards
    pp_schedule: str = "1f1b"  # 1f1b | gpipe (torch.distributed.pipelining)


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if isinstance(t, DTensor) else t


class ModelParallel(MeshParallelism):
    name = "model_parallel"
    Options = ModelParallelOptions

    @classmethod
    def preflight(cls, cfg, world_size: int) -> Layout:
        """The mesh's checks, then what TP/PP/CP themselves need (before any process group starts)."""
        layout = super().preflight(cfg, world_size)
        check_tp(cfg.model, layout.tp)
        if layout.cp > 1:
            local_positions(cfg.data.seq_length, 0, layout.cp)  # seq divisible by 2 x cp
        if layout.pp > 1:
            check_pp(cfg.model, from_dict(cls.Options, cfg.parallel, prefix="parallel").pp_schedule)
        return layout

    @classmethod
    def check_layout(cls, layout: Layout) -> None:
        if layout.pp > 1 and layout.cp > 1:
            raise UserError("parallel.pp and parallel.cp together are not supported; use one of them")
        if layout.dp_replicate != 1:
            raise UserError("parallel.dp_replicate (HSDP) applies to fsdp2 without tp/pp/cp; the model-parallel "
                            "strategy shards over every data-parallel rank")

    # ---- the model ---------------------------------------------------------------------------------------
    def parallelize(self, model: torch.nn.Module) -> torch.nn.Module:
        lay, mesh = self.layout, self.mesh
        self.order = [n for n, _ in model.named_parameters()]  # the unsharded model's parameter order
        self.known = set(model.state_dict())
        self.pipeline = None
        if lay.pp > 1:
            rank = mesh.pp_rank
            cut_stage(model, lay.stage_layers(rank), first=rank == 0, last=rank == lay.pp - 1)
        if lay.tp > 1:
            apply_tensor_parallel(model, mesh.tp, self.options.sequence_parallel)
        self.inner = model
        stage = StageModule(model, self.cfg.data.seq_length) if lay.pp > 1 else None
        self.sharded = mesh.size("dp_cp") > 1
        if self.sharded:
            layers = model.layers.values() if isinstance(model.layers, torch.nn.ModuleDict) else model.layers
            # under PP the stage is the FSDP root: torch's schedule finds it there and drives its grad sync
            shard_model(stage or model, list(layers), mesh["dp_cp"], self.options,
                        reshard_after_forward=False if stage is not None else None)
        self.name_of = {id(p): n for n, p in model.named_parameters()}  # the (sharded) parameters trained
        if lay.cp > 1:
            return ContextParallel(model, mesh.cp)
        if stage is not None:
            self.shape = (self.cfg.train.micro_batch_size, self.cfg.data.seq_length, self.cfg.grad_accum_steps(lay.dp))
            self.pipeline = Pipeline(stage, mesh.pp, self.device, self.shape[2], self.options.pp_schedule,
                                     *self._stage_examples(model, *self.shape[:2]))
            self.pipelined = PipelinedModel(stage, self.pipeline)
            return self.pipelined
        return model

    def reshape(self, trainer: Any) -> None:
        """A stage of a run in stages with another micro-batch shape or accumulation: the pipeline's schedule
        (built for fixed shapes) is rebuilt for it; the stage module and its parameters stay."""
        shape = (trainer.mbs, trainer.seq, trainer.accum)
        if self.pipeline is None or shape == self.shape:
            return
        self.shape = shape
        stage = self.pipelined.stage
        stage.seq_len = trainer.seq
        self.pipeline = Pipeline(stage, self.mesh.pp, self.device, trainer.accum, self.options.pp_schedule,
                                 *self._stage_examples(self.inner, trainer.mbs, trainer.seq))
        self.pipelined.pipeline = self.pipeline

    def _stage_examples(self, model, micro_batch_size: int, seq: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Example input/output of this stage for one micro-batch (the shapes the schedule sends)."""
        from llmctl.core.plugins import lookup

        rows = getattr(lookup("tasks", self.cfg.train.task), "rows_per_sample", 1)  # DPO: 2 rows a pair
        mbs = micro_batch_size * rows
        hidden = self.cfg.model.hidden_size
        sharded = seq // self.layout.tp if self.layout.tp > 1 and self.options.sequence_parallel else seq
        dtype = DTYPES[self.options.param_dtype] or next(model.parameters()).dtype
        first, last = self.pipeline_rank == 0, self.pipeline_rank == self.layout.pp - 1
        act = {"dtype": dtype, "device": self.device, "requires_grad": True}  # static metadata: grads flow back
        inp = torch.zeros(mbs, seq, dtype=torch.long, device=self.device) if first else \
            torch.empty(mbs, sharded, hidden, **act)
        return inp, torch.empty(mbs, seq if last else sharded, hidden, **act)

    def describe(self) -> str:
        sharded = f", data parallel: fully_shard over dp_cp {self.mesh.size('dp_cp')}" \
            if getattr(self, "sharded", False) else ""
        return super().describe() + sharded

    @property
    def pipeline_rank(self) -> int:
        return self.mesh.pp_rank

    def unwrap(self, model: torch.nn.Module) -> torch.nn.Module:
        return self.inner

    # ---- one step ----------------------------------------------------------------------------------------
    def no_sync(self, model: torch.nn.Module):
        """No reduce-scatter on the micro-batches before the last (the pipeline's schedule does this itself)."""
        return gradient_sync_off(self.inner) if self.sharded else contextlib.nullcontext()

    def forward_backward(self, trainer: Any, step: int, batches: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        if self.pipeline is None:
            return super().forward_backward(trainer, step, batches)
        return self._pipeline_step(trainer, step, batches)

    def _pipeline_step(self, trainer: Any, step: int, batches: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        packed: list[torch.Tensor] = []

        def loss_fn(hidden: torch.Tensor, index: int) -> torch.Tensor:
            loss_sum, count, metrics = trainer.task.loss_from_hidden(self.inner, hidden, batches[index])
            loss_sum = trainer.callbacks.transform_loss(trainer, step, loss_sum)
            packed.append(trainer.micro_batch_sums(loss_sum, count, metrics))
            return loss_sum / trainer.loss_divisor

        with trainer.autocast():
            self.pipeline.run(torch.cat([b["input_ids"] for b in batches]), loss_fn, **stage_inputs(batches))
        if not packed:  # not the last stage: it adds nothing to the step's sums
            return torch.zeros(2 + 2 * len(trainer.metric_names), device=self.device)
        return torch.stack(packed).sum(0)

    @property
    def grad_mean_divisor(self) -> int:
        """FSDP's reduce-scatter averages over the dp_cp ranks (each holding grads of its own tokens)."""
        return self.mesh.size("dp_cp")

    def sum_over_dp(self, tensor: torch.Tensor) -> torch.Tensor:
        """Each loss counted once: TP/CP peers hold copies (kept from rank 0 of each), and only the last
        pipeline stage has a loss; then a sum over every rank is the sum over data-parallel ranks."""
        if self.mesh.tp_rank != 0 or self.mesh.cp_rank != 0 or self.mesh.pp_rank != self.layout.pp - 1:
            tensor.zero_()
        dist.all_reduce(tensor)
        return tensor

    def clip_grad_norm(self, model: torch.nn.Module, params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
        grads = [p.grad for p in params if p.grad is not None]
        squares = sharded_grad_norm(grads, self.device).float() ** 2  # this stage's part: reduced over dp_cp x tp
        if self.layout.pp > 1:
            dist.all_reduce(squares, group=self.mesh.group("pp"))
        total = squares.sqrt()
        coef = (max_norm / (total + 1e-6)).clamp(max=1.0)  # torch.nn.utils.clip_grad_norm_'s rule
        torch._foreach_mul_([_local(g) for g in grads], coef)
        return total

    # ---- state -------------------------------------------------------------------------------------------
    @property
    def _contributes(self) -> bool:
        """One rank per pipeline stage sends its stage's whole (TP-gathered) state to the writer."""
        return self.mesh.dp_rank == 0 and self.mesh.cp_rank == 0 and self.mesh.tp_rank == 0

    def model_state_dict(self, model: torch.nn.Module) -> dict[str, torch.Tensor]:
        return full_state.full_model_state(self.inner, self._contributes)

    def load_model_state_dict(self, model: torch.nn.Module, state: dict[str, torch.Tensor],
                              strict: bool = True) -> None:
        full_state.load_full_model_state(self.inner, state, self.known, strict)

    def optimizer_state_dict(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        return full_state.full_optimizer_state(optimizer, self.name_of, self.order, self._contributes)

    def load_optimizer_state_dict(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                                  state: dict[str, Any]) -> None:
        names = None if full_state.NAMES_KEY in state else \
            full_state.unsharded_group_names(optimizer, self.name_of, self.order)
        full_state.load_full_optimizer_state(optimizer, state, self.name_of, names)


def _splits_the_model(cfg) -> bool:
    return any(int(cfg.parallel.get(key, 1) or 1) > 1 for key in ("tp", "pp", "cp"))


class FSDP2Strategy:
    """`parallel.strategy: fsdp2`. Pure data parallelism is `fsdp.FSDP2` (with HSDP); with tp/pp/cp > 1 it is
    `ModelParallel`, whose data parallelism is that same fully_shard, composed with TP's DTensor plan (and
    over PP stages, with CP). One name for both, so `--set parallel.strategy=fsdp2 --tp 2` does what it says."""

    name = "fsdp2"
    Options = FSDP2Options

    def __new__(cls, cfg):
        return (ModelParallel if _splits_the_model(cfg) else FSDP2)(cfg)

    @classmethod
    def preflight(cls, cfg, world_size: int) -> Layout:
        return (ModelParallel if _splits_the_model(cfg) else FSDP2).preflight(cfg, world_size)
