"""The pretraining loop: AdamW on the llama-family Transformer over a blended GPT dataset, with grad
accumulation, closed-form LR schedules, mixed precision, guards with rollback, channel loss, Megatron-style
logs and exact resume.

Parallelism is not in here: the model and optimizer come from `build_model` / `build_optimizer`, the model can
be wrapped by a `wrap_model` callable (DDP/FSDP from llmctl-parallel), and rank/world size are read from
torch.distributed when it is initialised. Each rank reads its own contiguous shard of every global batch.

The step keeps everything on the device: losses accumulate as tensors and are read (one packed `.tolist()`)
only at log intervals. The one exception is the guard, which must know before the optimizer step whether
the step is sane; it reads loss and grad norm together once per step (set guards.enabled=false to avoid it).
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import math
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist

from ..nn.checkpoint import latest_iteration, load_checkpoint, save_checkpoint
from ..config import to_dict
from ..nn.device import max_memory_allocated_gb, peak_flops, pick_device
from ..errors import UserError
from ..nn.kernels import select_kernels
from ..nn.model import Transformer
from ..plugins import lookup
from ..progress import progress
from .config import TrainConfig, load_train_config
from .guards import Guard
from .metrics import RunLog
from .schedule import lr_lambda
from .state import TrainState, capture_rng, restore_rng, seed_everything

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
CHECKPOINT_VERSION = 3.0  # Megatron's field name; our layout of the state dict below


@dataclasses.dataclass
class PretrainResult:
    final_step: int
    train_loss: float | None  # last logged training loss
    val_loss: float | None  # last validation loss (None when eval.iters == 0)
    checkpoint_dir: Path | None
    log_path: Path  # the JSONL metrics
    stopped_early: bool  # stop_at_step / exit_interval ended the run before train_iters


# ---- the pieces a parallel plugin wraps or replaces ------------------------------------------------------
def build_model(cfg: TrainConfig, device: torch.device) -> Transformer:
    model = Transformer(cfg.model_config())
    model.set_kernels(select_kernels(device.type, cfg.train.kernels))
    model.activation_checkpointing = cfg.train.activation_checkpointing
    return model.to(device)


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW; like Megatron, no weight decay on biases and norm weights (every 1-D parameter)."""
    t = cfg.train
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=t.lr, betas=tuple(t.betas), eps=t.eps, **_adamw_impl(model))


def _adamw_impl(model: torch.nn.Module) -> dict[str, bool]:
    on_cuda = next(model.parameters()).device.type == "cuda"
    return {"fused": True, "foreach": False} if on_cuda else {"fused": False, "foreach": True}


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    t = cfg.train
    fn = lr_lambda(lr=t.lr, min_lr=t.min_lr, total=cfg.train_iters, warmup=cfg.warmup_iters,
                   schedule=t.schedule, decay_fraction=t.decay_fraction)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, [fn] * len(optimizer.param_groups))


def channel_names(source_names: list[str]) -> list[str]:
    """Short names for the per-source losses: the prefix's file name ("data/zh_corpus" -> "zh_corpus"), or the
    whole prefix where two sources share a file name."""
    short = [Path(str(n)).name for n in source_names]
    return short if len(set(short)) == len(short) else [str(n) for n in source_names]


def dist_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


# ---- data ------------------------------------------------------------------------------------------------
class _Cyclic(torch.utils.data.Dataset):
    """Index modulo the dataset length: guard rollbacks jump past samples, so a run may read a few more
    samples than train_iters x global batch; those wrap to the start."""

    def __init__(self, ds):
        self.ds = ds

    def __getitem__(self, i: int):
        return self.ds[i % len(self.ds)]


class _Positions(torch.utils.data.Sampler):
    """This rank's sample indices in order from data position `start`: every global batch of `gbs` samples
    is cut into `world` contiguous shards. The data position is the whole resume state of the data."""

    def __init__(self, start: int, gbs: int, rank: int, world: int):
        self.start, self.gbs, self.rank, self.per_rank = start, gbs, rank, gbs // world

    def __iter__(self) -> Iterator[int]:
        for base in itertools.count(self.start + self.rank * self.per_rank, self.gbs):
            yield from range(base, base + self.per_rank)


class _HangWhenPickled:
    """Test hook (LLMCTL_TEST_HANG_IN_SAVE=ITER): stalls torch.save mid-file so a test can SIGKILL a save."""

    def __reduce__(self):
        time.sleep(3600)
        return (int, (0,))


# ---- the trainer -----------------------------------------------------------------------------------------
class Trainer:
    def __init__(self, cfg: TrainConfig, *, wrap_model: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
                 echo: Callable[[str], None] | None = None):
        self.cfg = cfg
        self.rank, self.world = dist_info()
        cfg.check(self.world)
        t = cfg.train
        if t.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        self.device = pick_device(None if t.device == "auto" else t.device)
        self.amp_dtype = DTYPES[t.dtype]
        self.gbs, self.mbs, self.seq = cfg.global_batch_size, t.micro_batch_size, cfg.data.seq_length
        self.accum = cfg.grad_accum_steps(self.world)
        self.total = cfg.train_iters

        build = lookup("datasets", cfg.data.dataset)  # first: a wrong data path fails before any model work
        self.train_ds = build(cfg.data.path, seq_len=self.seq, num_samples=self.total * self.gbs,
                              seed=t.seed, split="train")
        self.val_ds = (build(cfg.data.path, seq_len=self.seq, num_samples=cfg.eval.iters * self.gbs,
                             seed=t.seed, split="val") if cfg.eval.iters > 0 else None)
        self.sources = channel_names(self.train_ds.source_names)

        seed_everything(t.seed)
        self.raw = build_model(cfg, self.device)
        self.model = wrap_model(self.raw) if wrap_model else self.raw
        if t.compile:
            self.model = torch.compile(self.model)
        self.optimizer = build_optimizer(self.raw, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg)
        self.scaler = torch.amp.GradScaler(self.device.type) if t.dtype == "fp16" else None
        self.params = [p for p in self.raw.parameters() if p.requires_grad]
        self.guard = Guard(cfg.guards) if cfg.guards.enabled else None
        self.state = TrainState()
        self._injected: set[int] = set()

        self.ckpt_dir = Path(cfg.checkpoint.dir) if cfg.checkpoint.dir else None
        self.tokenizer_dir = None
        if cfg.data.tokenizer:
            from ..tokenizer import find_tokenizer_dir

            self.tokenizer_dir = find_tokenizer_dir(cfg.data.tokenizer)
        self.bar = progress(total=self.total, desc="pretrain", unit="step") if self.rank == 0 else None
        self.log = RunLog(cfg.logging.dir, cfg.run_name(), cfg.logging.sinks, enabled=self.rank == 0,
                          echo=echo or (self.bar.write if self.bar is not None else None))
        self.peak = peak_flops(self.device, self.amp_dtype)
        self.flops_per_token = self.raw.cfg.flops_per_token(self.seq)
        self._reset_interval()

    # ---- helpers -----------------------------------------------------------------------------------------
    def _autocast(self):
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype != torch.float32)

    def _loader(self, ds, start: int) -> Iterator[dict[str, torch.Tensor]]:
        return iter(torch.utils.data.DataLoader(
            _Cyclic(ds), batch_size=self.mbs, sampler=_Positions(start, self.gbs, self.rank, self.world),
            num_workers=self.cfg.data.num_workers, pin_memory=self.device.type == "cuda"))

    def _reset_interval(self) -> None:
        z = lambda n=(): torch.zeros(n, device=self.device)  # noqa: E731
        n = len(self.sources)
        self.acc = {"loss": z(), "n": z(), "nan": z(), "src_loss": z(n), "src_tok": z(n)}
        self.interval_skipped = 0
        self.last_grad_norm = z()
        self.interval_start = (time.perf_counter(), self.state.iteration)

    def _sum_across_ranks(self, t: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            dist.all_reduce(t)
        return t

    # ---- one optimizer step ------------------------------------------------------------------------------
    def train_step(self, step: int, batches: list[dict[str, torch.Tensor]]) -> tuple[str | None, bool, float]:
        """Forward/backward over the micro-batches, then (unless the guard objects) one optimizer step.
        Returns (guard reason or None, fp16 overflow, grad norm as read by the guard or nan without one)."""
        self.model.train()
        denom = float(self.mbs * self.seq * len(batches))  # mean over this rank's tokens of the global batch
        loss_step = torch.zeros((), device=self.device)
        src_loss = torch.zeros(len(self.sources), device=self.device)
        src_tok = torch.zeros(len(self.sources), device=self.device)
        inject = step in self.cfg.guards.inject_nan_at_steps and step not in self._injected
        if inject:
            self._injected.add(step)
        for j, batch in enumerate(batches):
            tokens = batch["tokens"].to(self.device, non_blocking=True)
            source = batch["source"].to(self.device, non_blocking=True)
            last = j == len(batches) - 1
            no_sync = getattr(self.model, "no_sync", None)
            with (no_sync() if no_sync is not None and not last else contextlib.nullcontext()):
                with self._autocast():
                    per_token = self.model(tokens[:, :-1], tokens[:, 1:])
                if inject:
                    per_token = per_token * float("nan")
                loss = per_token.sum() / denom
                (self.scaler.scale(loss) if self.scaler else loss).backward()
            loss_step += loss.detach()
            per_sample = per_token.detach().sum(1)
            src_loss.index_add_(0, source, per_sample)
            src_tok.index_add_(0, source, torch.full_like(per_sample, self.seq))

        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        clip = self.cfg.train.clip_grad if self.cfg.train.clip_grad > 0 else float("inf")
        grad_norm = torch.nn.utils.clip_grad_norm_(self.params, clip)

        reason, overflow, good, norm_v = None, False, True, float("nan")
        if self.guard is not None:
            loss_v, norm_v = torch.stack([loss_step, grad_norm.float()]).tolist()
            reason = self.guard.check(loss_v, norm_v, overflow_ok=self.scaler is not None)
            overflow = reason is None and not math.isfinite(norm_v)
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
            self.acc["loss"] += torch.where(finite, loss_step, 0.0)
            self.acc["n"] += finite
            self.acc["src_loss"] += torch.where(finite, src_loss, 0.0)
            self.acc["src_tok"] += torch.where(finite, src_tok, 0.0)
        self.acc["nan"] += ~torch.isfinite(loss_step)
        self.last_grad_norm = grad_norm.detach().float()
        return reason, overflow, norm_v

    # ---- logging -----------------------------------------------------------------------------------------
    def _log_train(self, step: int, lr: float) -> float | None:
        n_src = len(self.sources)
        packed = torch.cat([torch.stack([self.acc["loss"], self.acc["n"], self.acc["nan"], self.last_grad_norm]),
                            self.acc["src_loss"], self.acc["src_tok"]])
        values = self._sum_across_ranks(packed).tolist()
        loss_sum, n_good, n_nan, grad_norm = values[0], values[1], values[2] / self.world, values[3] / self.world
        elapsed = time.perf_counter() - self.interval_start[0]
        iters = max(1, step - self.interval_start[1])
        step_ms = 1000.0 * elapsed / iters
        tokens_per_s = self.cfg.tokens_per_step / (step_ms / 1000.0)
        loss = loss_sum / n_good if n_good else None
        rec: dict[str, Any] = {
            "step": step, "consumed_samples": self.state.consumed_samples,
            "consumed_tokens": self.state.consumed_samples * self.seq,
            "tokens": self.state.consumed_samples * self.seq, "loss": loss}
        for i, name in enumerate(self.sources if n_src > 1 else []):  # channel losses for a blend only
            tok = values[4 + n_src + i]
            rec[f"loss/{name}"] = values[4 + i] / tok if tok else None
        rec.update({
            "lr": lr, "grad_norm": grad_norm if math.isfinite(grad_norm) else None, "step_ms": step_ms,
            "tokens_per_s": tokens_per_s,
            "mfu": (self.flops_per_token * tokens_per_s / (self.peak * self.world)) if self.peak else None,
            "mem_gb": max_memory_allocated_gb(self.device), "loss_scale": self.scaler.get_scale() if self.scaler
            else 1.0, "skipped": self.interval_skipped, "nan_iterations": int(round(n_nan)),
            "skipped_samples": self.state.skipped_samples})
        self.log.train(rec, train_iters=self.total, global_batch_size=self.gbs)
        if self.bar is not None and loss is not None:
            self.bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
        self._reset_interval()
        return loss

    @torch.no_grad()
    def evaluate(self, step: int) -> float:
        """Mean token loss over the first eval.iters global batches of the _val split (the same batches every
        time, so validation losses along a run are comparable)."""
        self.model.eval()
        names = channel_names(self.val_ds.source_names)
        src = torch.zeros(2, len(names), device=self.device)  # [loss sum, tokens] per source
        for batch in itertools.islice(self._loader(self.val_ds, 0), self.cfg.eval.iters * self.accum):
            tokens = batch["tokens"].to(self.device, non_blocking=True)
            source = batch["source"].to(self.device, non_blocking=True)
            with self._autocast():
                per_sample = self.model(tokens[:, :-1], tokens[:, 1:]).float().sum(1)
            src[0].index_add_(0, source, per_sample)
            src[1].index_add_(0, source, torch.full_like(per_sample, self.seq))
        loss_sums, tokens = self._sum_across_ranks(src).tolist()
        val_loss = sum(loss_sums) / max(sum(tokens), 1.0)
        rec: dict[str, Any] = {"step": step, "consumed_tokens": self.state.consumed_samples * self.seq,
                               "val_loss": val_loss, "val_ppl": math.exp(min(20.0, val_loss))}
        for name, loss_sum, tok in zip(names, loss_sums, tokens):
            if tok and len(names) > 1:
                rec[f"val_loss/{name}"] = loss_sum / tok
        self.log.validation(rec)
        self.model.train()
        return val_loss

    # ---- checkpoints -------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        self.state.guard_window = list(self.guard.window) if self.guard else []
        state = {"iteration": self.state.iteration, "checkpoint_version": CHECKPOINT_VERSION,
                 "model": self.raw.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "opt_param_scheduler": self.scheduler.state_dict(),
                 "grad_scaler": self.scaler.state_dict() if self.scaler else {},
                 "rng_state": capture_rng(self.device), "train_state": self.state.to_dict()}
        if os.environ.get("LLMCTL_TEST_HANG_IN_SAVE") == str(self.state.iteration):
            state["zz_test_hang"] = _HangWhenPickled()
        return state

    def save(self) -> None:
        if self.ckpt_dir is None:
            return
        state = self.state_dict()
        if self.rank == 0:
            path = save_checkpoint(self.ckpt_dir, self.state.iteration, state, config=to_dict(self.cfg),
                                   tokenizer_dir=self.tokenizer_dir, keep=self.cfg.checkpoint.keep)
            self.log.note(f"  successfully saved checkpoint from iteration {self.state.iteration:7d} to {path}")
        if self.world > 1:
            dist.barrier()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.raw.load_state_dict(state["model"])
        impl = _adamw_impl(self.raw)
        self.optimizer.load_state_dict(state["optimizer"])
        for group in self.optimizer.param_groups:  # the device may differ from the one that saved
            group.update(impl)
        self.scheduler.load_state_dict(state["opt_param_scheduler"])
        if self.scaler is not None and state.get("grad_scaler"):
            self.scaler.load_state_dict(state["grad_scaler"])
        restore_rng(state["rng_state"], self.device)
        self.state = TrainState.from_dict(state["train_state"])
        if self.guard is not None:
            self.guard = Guard(self.cfg.guards, self.state.guard_window)

    def resume(self, source: str) -> bool:
        """Load `source` ("auto": the latest checkpoint in checkpoint.dir, if any). False when auto found none."""
        if source == "auto":
            if self.ckpt_dir is None:
                raise UserError("--resume auto needs checkpoint.dir in the config")
            if latest_iteration(self.ckpt_dir) is None:
                return False
            source = str(self.ckpt_dir)
        state, saved_cfg, it_dir = load_checkpoint(source)
        saved_model = saved_cfg.get("model") or {}
        for key, value in self.cfg.model.items():
            if key in saved_model and saved_model[key] != value:
                raise UserError(f"{it_dir}: checkpoint has model.{key}={saved_model[key]!r} but the config has "
                                f"{value!r}; resume needs the same model")
        self.load_state_dict(state)
        self.log.event({"step": self.state.iteration, "event": "resume", "from": str(it_dir),
                        "consumed_samples": self.state.consumed_samples})
        return True

    def _remove_stale_temps(self) -> None:
        """Temp dirs a killed save left behind (the pointer never named them)."""
        if self.rank == 0 and self.ckpt_dir is not None and self.ckpt_dir.is_dir():
            for tmp in self.ckpt_dir.glob(".iter_*.tmp"):
                shutil.rmtree(tmp, ignore_errors=True)

    def rollback(self, step: int, reason: str) -> None:
        """After guards.max_consecutive bad steps: reload the last checkpoint (model, optimizer, schedule, RNG)
        but keep the data position, so the batches that went bad are skipped, not replayed."""
        g = self.cfg.guards
        if self.state.rollbacks >= g.max_rollbacks:
            raise UserError(f"guards: {g.max_consecutive} bad steps in a row at iteration {step} ({reason}) after "
                            f"{self.state.rollbacks} rollbacks; stopping. Inspect the data near sample "
                            f"{self.state.consumed_samples} or lower train.lr")
        if self.ckpt_dir is None or latest_iteration(self.ckpt_dir) is None:
            raise UserError(f"guards: {g.max_consecutive} bad steps in a row at iteration {step} ({reason}) and "
                            "no checkpoint to roll back to (set checkpoint.dir and checkpoint.interval)")
        live = self.state
        state, _, it_dir = load_checkpoint(self.ckpt_dir)
        self.load_state_dict(state)
        jumped = live.consumed_samples - self.state.consumed_samples
        self.state.consumed_samples = live.consumed_samples
        self.state.skipped_samples = live.skipped_samples + jumped
        self.state.skipped_iters = live.skipped_iters
        self.state.rollbacks = live.rollbacks + 1
        self.data = self._loader(self.train_ds, self.state.consumed_samples)
        self.log.event({"step": step, "event": "rollback", "to_iteration": self.state.iteration,
                        "reason": reason, "skipped_samples": jumped, "checkpoint": str(it_dir)})
        self._reset_interval()
        if self.bar is not None:
            self.bar.n = self.state.iteration
            self.bar.refresh()

    # ---- the loop ----------------------------------------------------------------------------------------
    def run(self, resume: str | None = None, stop_at_step: int | None = None) -> PretrainResult:
        self._remove_stale_temps()
        if resume:
            self.resume(resume)
        cfg = self.cfg
        self.log.note(f" > llmctl pretrain: {self.raw.num_params():,} parameters, device {self.device}, "
                      f"dtype {cfg.train.dtype}, kernels {self.raw.ops.names}, global batch {self.gbs} = "
                      f"{self.mbs} x {self.accum} accumulation x {self.world} ranks, {cfg.tokens_per_step:,} "
                      f"tokens/step, {self.total} iterations, warmup {cfg.warmup_iters}")
        for key, value in (("seq_length", self.seq), ("global_batch_size", self.gbs),
                           ("micro_batch_size", self.mbs), ("train_iters", self.total), ("lr", cfg.train.lr)):
            self.log.note(f"  {key} {'.' * (48 - len(key))} {value}")  # Megatron's argument dump format
        self.data = self._loader(self.train_ds, self.state.consumed_samples)
        if self.bar is not None:
            self.bar.n = self.state.iteration
            self.bar.refresh()
        self._reset_interval()
        train_loss = val_loss = None
        stopped = False
        saved_at = self.state.iteration if resume else None
        while self.state.iteration < self.total:
            step = self.state.iteration + 1
            _crash_hook(step, self.ckpt_dir)
            batches = [next(self.data) for _ in range(self.accum)]
            lr = self.optimizer.param_groups[0]["lr"]
            reason, overflow, grad_norm = self.train_step(step, batches)
            self.state.iteration = step
            self.state.consumed_samples += self.gbs
            if reason is not None or overflow:
                self.state.skipped_iters += 1
                self.interval_skipped += 1
            if self.bar is not None:
                self.bar.update(1)
            if reason is not None:
                self.log.event({"step": step, "event": "skip", "reason": reason,
                                "consumed_samples": self.state.consumed_samples})
            if self.guard is not None and self.guard.record(reason is not None, grad_norm):
                self.rollback(step, reason)
                continue
            if step % cfg.logging.interval == 0 or step == self.total:
                train_loss = self._log_train(step, lr) or train_loss
            if self.val_ds is not None and cfg.eval.interval and step % cfg.eval.interval == 0 \
                    and step != self.total:
                val_loss = self.evaluate(step)
            if cfg.checkpoint.interval and step % cfg.checkpoint.interval == 0:
                self.save()
                saved_at = step
            exit_interval = cfg.train.exit_interval
            if step != self.total and (step == stop_at_step or (exit_interval and step % exit_interval == 0)):
                stopped = True
                break
        if not stopped and self.val_ds is not None:
            val_loss = self.evaluate(self.state.iteration)
        if saved_at != self.state.iteration:
            self.save()
        return PretrainResult(final_step=self.state.iteration, train_loss=train_loss, val_loss=val_loss,
                              checkpoint_dir=self.ckpt_dir, log_path=self.log.jsonl_path, stopped_early=stopped)

    def close(self) -> None:
        self.log.close()
        if self.bar is not None:
            self.bar.close()


def _crash_hook(step: int, ckpt_dir: Path | None) -> None:
    """Test hook (LLMCTL_TEST_CRASH_AT_STEP=N): SIGKILL this process when step N starts, once per checkpoint
    dir (a marker file), so the supervisor's restart does not crash again."""
    if os.environ.get("LLMCTL_TEST_CRASH_AT_STEP") != str(step) or ckpt_dir is None:
        return
    marker = ckpt_dir / f".test_crashed_at_{step}"
    if marker.exists():
        return
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    marker.touch()
    os.kill(os.getpid(), signal.SIGKILL)


def pretrain(cfg: TrainConfig | str | os.PathLike | dict, *, resume: str | None = None,
             stop_at_step: int | None = None, wrap_model: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
             echo: Callable[[str], None] | None = None) -> PretrainResult:
    """Train per `cfg` (a TrainConfig, YAML path, preset name or dict). `resume`: "auto" or a checkpoint dir
    (default: checkpoint.resume). `stop_at_step`: save and return after that step, as if interrupted."""
    if not isinstance(cfg, TrainConfig):
        cfg = load_train_config(cfg)
    trainer = Trainer(cfg, wrap_model=wrap_model, echo=echo)
    try:
        return trainer.run(resume=resume or cfg.checkpoint.resume, stop_at_step=stop_at_step)
    finally:
        trainer.close()

