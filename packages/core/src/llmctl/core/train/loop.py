"""The training driver: one loop for every Task (what is trained) and every Parallelism (how it is spread).

The loop owns cadence only: steps, gradient accumulation, the LR schedule, clipping, guards with rollback,
logging, validation, checkpoint cadence and exact resume. The loss is Megatron's per-token loss: each
micro-batch's summed loss is back-propagated, the step's token count is summed over micro-batches and
data-parallel ranks, and the gradients are scaled once by (ranks averaged over) / (global count) — so masked
labels and uneven lengths weigh exactly as in one forward over the whole global batch.

The step keeps everything on the device: one packed all-reduce of [loss sum, count, metrics] per step, read
on the host (one `.tolist()`) only at log intervals — except by the guard, which must know before the
optimizer step whether the step is sane (set guards.enabled=false to avoid that read).

A run in stages (`stages.py`) is the same loop following a plan: before the first step of each stage the
driver applies its overlay (`staging.py`: batch shape, datasets and their positions, RoPE base); the LR is
the plan's piecewise schedule.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import os
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch

from ..errors import UserError
from ..nn.build import apply_activation_checkpointing, parse_dtype
from ..nn.checkpoint import remove_stale_temps
from ..nn.device import max_memory_allocated_gb, peak_flops
from ..plugins import lookup
from ..progress import progress
from .callbacks import CallbackList, bus_callbacks
from .checkpointing import Checkpointing
from .config import TrainConfig, load_train_config
from .guards import SEVERITY, Guard, LossSpikeGuard
from .heldout import HeldoutSets
from .metrics import RunLog
from .parallelism import Parallelism, iter_dp_positions, resolve_strategy, torchrun_world
from .optim import build_optimizer, build_scheduler, lr_base
from .staging import Staging
from .state import TrainState, seed_everything
from .task import Task

_FORMATS = {"hf": "Hugging Face", "native": "llmctl", "mcore": "megatron-core"}


@dataclasses.dataclass
class PretrainResult:
    final_step: int
    train_loss: float | None  # last logged training loss
    val_loss: float | None  # last validation loss (None when eval.iters == 0)
    checkpoint_dir: Path | None
    log_path: Path  # the JSONL metrics
    stopped_early: bool  # stop_at_step / exit_interval ended the run before train_iters


# ---- the pieces the driver is assembled from -------------------------------------------------------------
def build_parallelism(cfg: TrainConfig) -> Parallelism:
    name = resolve_strategy(cfg)
    par = lookup("parallelisms", name)(cfg)
    if par.world_size != torchrun_world()[1]:
        raise UserError(f"parallel.strategy {name} runs one process but torchrun started "
                        f"{torchrun_world()[1]}; use ddp (or auto) under torchrun")
    return par


def build_task(cfg: TrainConfig) -> Task:
    return lookup("tasks", cfg.train.task)(cfg)


class _Cyclic(torch.utils.data.Dataset):
    """Index modulo the dataset length: guard rollbacks jump past samples, so a run may read a few more
    samples than train_iters x global batch; those wrap to the start."""

    def __init__(self, ds):
        self.ds = ds

    def __getitem__(self, i: int):
        return self.ds[i % len(self.ds)]


class _Positions(torch.utils.data.Sampler):
    def __init__(self, start: int, gbs: int, dp_rank: int, dp_size: int):
        self.args = (start, gbs, dp_rank, dp_size)

    def __iter__(self) -> Iterator[int]:
        return iter_dp_positions(*self.args)


def _scale_grads(params: list[torch.nn.Parameter], factor: torch.Tensor) -> None:
    grads = [p.grad for p in params if p.grad is not None]
    if grads and all(type(g) is torch.Tensor for g in grads):
        torch._foreach_mul_(grads, factor)
    else:  # DTensor grads (FSDP2/TP) scale one by one
        for g in grads:
            g.mul_(factor)


# ---- the trainer -----------------------------------------------------------------------------------------
class Trainer(Checkpointing, Staging):
    def __init__(self, cfg: TrainConfig, *, callbacks: Iterable[Any] = (), echo=None):
        self.cfg = cfg
        t = cfg.train
        # the task first: a finetuning task reads its base model's config into cfg.model, which the parallel
        # layout is planned and checked against (layers per pipeline stage, heads per TP rank)
        self.task = build_task(cfg)
        cfg.pad_vocab()  # the vocabulary rows for this run's TP, whatever model section the task settled on
        self.par = build_parallelism(cfg)
        cfg.check(self.par.dp_size)
        self.plan = cfg.plan()  # the stages (one for a run without stages:), checked
        if cfg.staged:  # each stage's shapes against the strategy (CP divides every seq_length, ...)
            for stage in self.plan.stages:
                type(self.par).preflight(cfg.stage_config(stage), self.par.world_size)
        if t.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        self.device = self.par.device
        self.amp_dtype = parse_dtype(t.dtype)
        self.total = self.plan.total
        self.callbacks = CallbackList([*bus_callbacks(), *callbacks])

        # datasets first: a wrong data path fails before any model work
        self.build_stage_data()
        self.metric_names = self.task.metric_names()
        self.heldout = HeldoutSets(cfg)
        self.stage = None
        self.set_shape(self.plan.stages[0])

        seed_everything(t.seed)
        model = self.task.prepare(self.task.build_model(self.device))
        if t.activation_checkpointing:
            apply_activation_checkpointing(model)
        self.module = self.par.parallelize(model)
        self.forward_model = torch.compile(self.module) if t.compile else self.module
        self.params = list(self.task.trainable_parameters(self.par.unwrap(self.module)))
        if not self.params:
            raise UserError(f"task {cfg.train.task}: no parameter requires grad; nothing would train")
        self.optimizer = self.par.build_optimizer(self.params, lambda params: build_optimizer(params, cfg))
        self.scheduler = build_scheduler(self.optimizer, cfg, self.plan)
        self.lr_base = lr_base(cfg, self.plan)
        self.scaler = torch.amp.GradScaler(self.device.type) if t.dtype == "fp16" else None
        self.guard = Guard(cfg.guards) if cfg.guards.enabled else None
        spike = cfg.guards.loss_spike
        self.spike = LossSpikeGuard(spike) if cfg.guards.enabled and spike.enabled else None
        self.state = TrainState(consumed_tokens=0)

        self.ckpt_dir = Path(cfg.checkpoint.dir) if cfg.checkpoint.dir else None
        self.check_checkpoint_format()
        self.tokenizer_dir = None
        if cfg.data.tokenizer:
            from ..tokenizer import find_tokenizer_dir

            self.tokenizer_dir = find_tokenizer_dir(cfg.data.tokenizer)
        writer = self.par.is_log_writer
        self.bar = progress(total=self.total, desc=cfg.train.task, unit="step") if writer else None
        self.log = RunLog(cfg.logging.dir, cfg.run_name(), cfg.logging.sinks, enabled=writer,
                          echo=echo or (self.bar.write if self.bar is not None else None))
        self.peak = peak_flops(self.device, self.amp_dtype)
        self.stage_tokens = torch.zeros(len(self.channel_metrics), device=self.device)
        self._reset_interval()

    # ---- helpers -----------------------------------------------------------------------------------------
    def autocast(self):
        """The run's mixed-precision context (a pipeline strategy's schedule runs its stages under it too)."""
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype != torch.float32)

    def _loader(self, ds, start: int) -> Iterator[dict[str, torch.Tensor]]:
        sampler = _Positions(start, self.gbs, self.par.dp_rank, self.par.dp_size)
        return iter(torch.utils.data.DataLoader(
            _Cyclic(ds), batch_size=self.mbs, sampler=sampler, collate_fn=self.task.collate,
            num_workers=self.cfg.data.num_workers, pin_memory=self.device.type == "cuda"))

    def _to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v
                for k, v in batch.items()}

    def _reset_interval(self) -> None:
        z = lambda n=(): torch.zeros(n, device=self.device)  # noqa: E731
        m = len(self.metric_names)
        self.acc = {"loss": z(), "n": z(), "nan": z(), "tokens": z(),
                    "metric_sum": z(m), "metric_count": z(m)}
        self.interval_skipped = 0
        self.last_grad_norm = z()
        self.interval_start = (time.perf_counter(), self.state.iteration)

    def micro_batch_sums(self, loss_sum, count, metrics) -> torch.Tensor:
        """[loss sum, count, metric sums..., metric counts...] of one micro-batch, as one fp32 vector."""
        zero = torch.zeros((), device=self.device)
        parts = [loss_sum.detach().float(), count.float()]
        parts += [metrics[n][0].float() if n in metrics else zero for n in self.metric_names]
        parts += [metrics[n][1].float() if n in metrics else zero for n in self.metric_names]
        return torch.stack(parts)

    # ---- one optimizer step ------------------------------------------------------------------------------
    def micro_batch(self, step: int, batch: dict[str, torch.Tensor], last: bool) -> torch.Tensor:
        """Forward and backward of one micro-batch (no grad sync unless `last`); its packed sums."""
        with (contextlib.nullcontext() if last else self.par.no_sync(self.module)):
            with self.autocast():
                loss_sum, count, metrics = self.task.loss(self.forward_model, batch)
            loss_sum = self.callbacks.transform_loss(self, step, loss_sum)
            loss = loss_sum / self.loss_divisor
            (self.scaler.scale(loss) if self.scaler else loss).backward()
        return self.micro_batch_sums(loss_sum, count, metrics)

    def train_step(self, step: int, batches: list[dict[str, torch.Tensor]]) -> tuple[str | None, bool, float]:
        """Forward/backward over the micro-batches, then (unless a guard objects) one optimizer step.
        Returns (guard reason or None, fp16 overflow, grad norm as read by the guard or nan without one);
        the loss spikes the step showed are in `self.spikes`."""
        self.module.train()
        tokens = sum(self.task.batch_tokens(b) for b in batches)  # host ints: no device sync
        sums = self.par.forward_backward(self, step, [self._to_device(b) for b in batches])
        sums = torch.cat([sums, torch.full((1,), tokens, dtype=sums.dtype, device=sums.device)])
        self.par.sum_over_dp(sums)  # [loss sum, count, metric sums, metric counts, tokens]
        count = sums[1].clamp_min(1.0)
        loss_step = sums[0] / count

        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        # grads now hold sum(d loss_sum) / loss_divisor, averaged over grad_mean_divisor ranks
        _scale_grads(self.params, self.loss_divisor * self.par.grad_mean_divisor / count)
        clip = self.cfg.train.clip_grad if self.cfg.train.clip_grad > 0 else float("inf")
        grad_norm = self.par.clip_grad_norm(self.module, self.params, clip)

        reason, overflow, good, norm_v = None, False, True, float("nan")
        self.spikes = []
        if self.guard is not None:
            m = len(self.metric_names)
            read = [loss_step[None], grad_norm.float()[None]]
            if self.spike is not None and self.spike.cfg.channels and self.channel_metrics:
                read += [sums[2:2 + m], sums[2 + m:2 + 2 * m]]
            values = torch.cat(read).tolist()
            loss_v, norm_v = values[:2]
            reason = self.guard.check(loss_v, norm_v, overflow_ok=self.scaler is not None)
            overflow = reason is None and not math.isfinite(norm_v)
            if reason is None and not overflow and self.spike is not None:
                losses = {"loss": loss_v}
                if len(values) > 2:
                    for i, name in enumerate(self.metric_names):
                        if name in self.channel_metrics and values[2 + m + i] > 0:
                            losses[name] = values[2 + i] / values[2 + m + i]
                self.spikes = self.spike.check(losses)
                worst = self.spikes[0] if self.spikes else None
                if worst is not None and SEVERITY[worst.action] > SEVERITY["warn"]:
                    reason = f"loss spike: {worst.describe()}"
            good = reason is None and not overflow
        if reason is None:
            (self.scaler.step(self.optimizer) if self.scaler else self.optimizer.step())
            if not overflow:
                self.scheduler.step()
        if self.scaler:
            self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)

        if good:
            finite = torch.isfinite(loss_step)
            m = len(self.metric_names)
            self.acc["loss"] += torch.where(finite, loss_step, 0.0)
            self.acc["n"] += finite
            self.acc["metric_sum"] += torch.where(finite, sums[2:2 + m], 0.0)
            self.acc["metric_count"] += torch.where(finite, sums[2 + m:2 + 2 * m], 0.0)
            self.count_stage_tokens(torch.where(finite, sums, 0.0))
            if self.spike is not None:
                self.spike.accept()
        self.acc["nan"] += ~torch.isfinite(loss_step)
        self.acc["tokens"] += sums[-1]
        self.last_grad_norm = grad_norm.detach().float()
        return reason, overflow, norm_v

    # ---- logging -----------------------------------------------------------------------------------------
    def _log_train(self, step: int, lr: float) -> float | None:
        m = len(self.metric_names)
        a = self.acc
        packed = torch.cat([torch.stack([a["loss"], a["n"], a["nan"], self.last_grad_norm, a["tokens"]]),
                            a["metric_sum"], a["metric_count"]])
        values = packed.tolist()  # already reduced over ranks each step: the same on every rank
        loss_sum, n_good, n_nan, grad_norm, read_tokens = values[:5]
        elapsed = time.perf_counter() - self.interval_start[0]
        iters = max(1, step - self.interval_start[1])
        step_ms = 1000.0 * elapsed / iters
        tokens_per_s = read_tokens / elapsed  # real tokens: tokens_per_step / step time without padding
        loss = loss_sum / n_good if n_good else None
        tokens = self.state.consumed_tokens
        rec: dict[str, Any] = {"step": step, "consumed_samples": self.state.consumed_samples,
                               "consumed_tokens": tokens, "tokens": tokens, "loss": loss}
        if self.plan.explicit:
            rec["stage"] = self.stage.name
        for i, name in enumerate(self.metric_names):
            count = values[5 + m + i]
            rec[name] = values[5 + i] / count if count else None
        world = self.par.world_size
        rec.update({
            "lr": lr, "grad_norm": grad_norm if math.isfinite(grad_norm) else None, "step_ms": step_ms,
            "tokens_per_s": tokens_per_s,
            "mfu": (self.flops_per_token * tokens_per_s / (self.peak * world)) if self.peak else None,
            "mem_gb": max_memory_allocated_gb(self.device), "loss_scale": self.scaler.get_scale() if self.scaler
            else 1.0, "skipped": self.interval_skipped, "nan_iterations": int(round(n_nan)),
            "skipped_samples": self.state.skipped_samples})
        rec.update(self.par.extra_log())
        self.log.train(rec, train_iters=self.total, global_batch_size=self.gbs)
        if self.bar is not None and loss is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        self._reset_interval()
        return loss

    @property
    def evaluates(self) -> bool:
        return self.val_ds is not None or bool(self.heldout)

    @torch.no_grad()
    def evaluate(self, step: int) -> float | None:
        """Mean loss over the first eval.iters global batches of the current stage's validation split (the
        same batches every time, so validation losses along a stage are comparable), and the perplexity of
        every held-out set (eval.sets). Returns the validation loss (None without a validation split)."""
        self.module.eval()
        rec: dict[str, Any] = {"step": step, "consumed_tokens": self.state.consumed_tokens}
        if self.plan.explicit:
            rec["stage"] = self.stage.name
        val_loss = None
        if self.val_ds is not None:
            sums = torch.zeros(2 + 2 * len(self.metric_names), device=self.device)
            for batch in itertools.islice(self._loader(self.val_ds, 0), self.cfg.eval.iters * self.accum):
                with self.autocast():
                    sums += self.micro_batch_sums(*self.task.loss(self.forward_model, self._to_device(batch)))
            values = self.par.sum_over_dp(sums).tolist()
            val_loss = values[0] / max(values[1], 1.0)
            rec.update({"val_loss": val_loss, "val_ppl": math.exp(min(20.0, val_loss))})
            m = len(self.metric_names)
            for i, name in enumerate(self.metric_names):
                if values[2 + m + i]:
                    rec[f"val_{name}"] = values[2 + i] / values[2 + m + i]
        if self.heldout:
            rec.update(self.heldout.evaluate(self))
        self.log.validation(rec)
        self.module.train()
        return val_loss

    # ---- the loop ----------------------------------------------------------------------------------------
    def _announce(self) -> None:
        cfg, unwrapped = self.cfg, self.par.unwrap(self.module)
        n_params = sum(p.numel() for p in unwrapped.parameters())
        n_train = sum(p.numel() for p in self.params)
        kernels = getattr(unwrapped, "ops", None)
        self.log.note(f" > llmctl {cfg.train.task}: {n_params:,} parameters ({n_train:,} trained), device "
                      f"{self.device}, dtype {cfg.train.dtype}, kernels {getattr(kernels, 'names', '?')}, "
                      f"parallel {self.par.describe()}, global batch {self.gbs} = {self.mbs} x {self.accum} "
                      f"accumulation x {self.par.dp_size} data-parallel ranks, {self.gbs * self.seq:,} "
                      f"tokens/step, {self.total} iterations, warmup {cfg.warmup_iters}")
        if self.task.initialised_from is not None:
            path, source = self.task.initialised_from
            self.log.note(f" > initialised from {path} ({_FORMATS.get(source, source)} weights; optimizer, "
                          "schedule and iteration start fresh)")
        b = cfg.branch
        if b.checkpoint is not None:
            self.log.note(f" > branch of run {b.origin_run} from {b.checkpoint} (iteration {b.iteration}): stage "
                          f"'{b.stage}' from iteration {b.iteration + 1}")
        if self.plan.explicit:
            self.log.note(f" > {len(self.plan.stages)} stages: " + ", ".join(
                f"{s.name} (iterations {s.start + 1}-{s.end})" for s in self.plan.stages))
        for key, value in (("seq_length", self.seq), ("global_batch_size", self.gbs),
                           ("micro_batch_size", self.mbs), ("train_iters", self.total), ("lr", cfg.train.lr),
                           ("data_parallel_size", self.par.dp_size), ("world_size", self.par.world_size)):
            self.log.note(f"  {key} {'.' * (48 - len(key))} {value}")  # Megatron's argument dump format

    def run(self, resume: str | None = None, stop_at_step: int | None = None) -> PretrainResult:
        if self.par.is_log_writer and self.ckpt_dir is not None:
            remove_stale_temps(self.ckpt_dir)
        self.par.barrier()
        resumed = self.resume(resume) if resume else False
        if not resumed and self.cfg.branch.checkpoint is not None:
            self.start_branch()
        cfg = self.cfg
        stage = self.plan.stage_at(min(self.state.iteration + 1, self.total))
        self.set_shape(stage)
        self._announce()
        self.enter_stage(stage)
        if self.bar is not None:
            self.bar.n = self.state.iteration
            self.bar.refresh()
        self._reset_interval()
        self.callbacks.call("on_train_start", self)
        train_loss = val_loss = None
        stopped = False
        saved_at = self.state.iteration if resume or self.cfg.branch.checkpoint is not None else None
        while self.state.iteration < self.total:
            step = self.state.iteration + 1
            stage = self.plan.stage_at(step)
            if stage is not self.stage:
                self.enter_stage(stage)
            self.callbacks.call("on_step_start", self, step)
            start = self.data_position()
            batches = [next(self.data) for _ in range(self.accum)]
            lr = self.optimizer.param_groups[0]["lr"]
            reason, overflow, grad_norm = self.train_step(step, batches)
            self.state.iteration = step
            self.state.consumed_samples += self.gbs
            self.state.consumed_tokens += self.gbs * self.seq
            self.state.data_positions[stage.data_key] = start + self.gbs
            if reason is not None or overflow:
                self.state.skipped_iters += 1
                self.interval_skipped += 1
            if self.bar is not None:
                self.bar.update(1)
            for spike in self.spikes:
                self.log.event({"step": step, "event": "loss_spike", "direction": spike.direction,
                                "channel": spike.channel, "loss": spike.value, "mean": spike.mean,
                                spike.method: spike.score, "threshold": spike.threshold, "action": spike.action,
                                **({"stage": stage.name} if self.plan.explicit else {}),
                                **self.sample_window(start, spike.channel)})
            if reason is not None:
                self.log.event({"step": step, "event": "skip", "reason": reason,
                                "consumed_samples": self.state.consumed_samples})
            if self.spikes and self.spikes[0].action == "rollback":
                self.rollback(step, reason, skip_samples=cfg.guards.loss_spike.skip_samples)
                continue
            if self.guard is not None and self.guard.record(reason is not None, grad_norm):
                self.rollback(step, reason)
                continue
            if step % cfg.logging.interval == 0 or step == self.total or (self.plan.explicit and step == stage.end):
                train_loss = self._log_train(step, lr) or train_loss
            if step == stage.end:
                self.end_stage(stage)
            if self.evaluates and cfg.eval.interval and step % cfg.eval.interval == 0 and step != self.total:
                val_loss = self.evaluate(step)
            if cfg.checkpoint.interval and step % cfg.checkpoint.interval == 0:
                self.save()
                saved_at = step
            exit_interval = cfg.train.exit_interval
            if step != self.total and (step == stop_at_step or (exit_interval and step % exit_interval == 0)):
                stopped = True
                break
        if not stopped and self.evaluates:
            val_loss = self.evaluate(self.state.iteration)
        if saved_at != self.state.iteration:
            self.save()
        self.callbacks.call("on_train_end", self)
        return PretrainResult(final_step=self.state.iteration, train_loss=train_loss, val_loss=val_loss,
                              checkpoint_dir=self.ckpt_dir, log_path=self.log.jsonl_path, stopped_early=stopped)

    def close(self, finished: bool = True) -> None:
        self.log.close()
        if self.bar is not None:
            self.bar.close()
        self.par.close(finished)


def pretrain(cfg: TrainConfig | str | os.PathLike | dict, *, resume: str | None = None,
             stop_at_step: int | None = None, callbacks: Iterable[Any] = (), echo=None) -> PretrainResult:
    """Train per `cfg` (a TrainConfig, YAML path, preset name or dict) with its task (train.task) and
    parallelism (parallel.strategy). `resume`: "auto" or a checkpoint dir (default: checkpoint.resume).
    `stop_at_step`: save and return after that step, as if interrupted. `callbacks`: objects with some of
    `train.callbacks.Callback`'s hooks, added to those plugins registered."""
    if not isinstance(cfg, TrainConfig):
        cfg = load_train_config(cfg)
    trainer = Trainer(cfg, callbacks=callbacks, echo=echo)
    finished = False
    # a branch continues its own checkpoints when it has some, else starts from the one it branches from
    resume = resume or cfg.checkpoint.resume or ("auto" if cfg.branch.checkpoint is not None else None)
    try:
        result = trainer.run(resume=resume, stop_at_step=stop_at_step)
        finished = True
        return result
    finally:
        trainer.close(finished)
