"""The driver's checkpoint side: what a checkpoint holds for an exact resume, saving it from every rank that
holds a shard, resuming from it, and the guards' rollback to it. A mixin of `Trainer` (loop.py), which owns the
cadence; these methods read the trainer's task, parallelism, optimizer, schedule and state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..config import to_dict
from ..errors import UserError
from ..nn.checkpoint import latest_iteration, load_checkpoint, save_sharded_checkpoint
from .guards import Guard
from .optim import adamw_impl
from .state import TrainState, capture_rng, restore_rng

CHECKPOINT_VERSION = 3.0  # Megatron's field name; our layout of the state dict below


class Checkpointing:
    def state_dict(self) -> dict[str, Any]:
        self.state.guard_window = list(self.guard.window) if self.guard else []
        model_state = self.task.saved_state(self.par.model_state_dict(self.module))
        return {"iteration": self.state.iteration, "checkpoint_version": CHECKPOINT_VERSION,
                "model": model_state, "optimizer": self.par.optimizer_state_dict(self.module, self.optimizer),
                "opt_param_scheduler": self.scheduler.state_dict(),
                "grad_scaler": self.scaler.state_dict() if self.scaler else {},
                "rng_state": capture_rng(self.device), "train_state": self.state.to_dict()}

    def save(self) -> None:
        if self.ckpt_dir is None:
            return
        shard = self.par.checkpoint_shard()
        state = self.state_dict()
        path = save_sharded_checkpoint(
            self.ckpt_dir, self.state.iteration, shard, state if shard else None, to_dict(self.cfg),
            tokenizer_dir=self.tokenizer_dir, keep=self.cfg.checkpoint.keep, is_writer=self.par.is_log_writer,
            barrier=self.par.barrier,
            before_publish=lambda tmp: self.callbacks.call("on_checkpoint_publish", self, tmp))
        self.log.note(f"  successfully saved checkpoint from iteration {self.state.iteration:7d} to {path}")

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.task.load_saved_state(self.module, state["model"], self.par.load_model_state_dict)
        self.par.load_optimizer_state_dict(self.module, self.optimizer, state["optimizer"])
        for group in self.optimizer.param_groups:  # the device may differ from the one that saved
            group.update(adamw_impl(self.params))
        self.scheduler.load_state_dict(state["opt_param_scheduler"])
        if self.scaler is not None and state.get("grad_scaler"):
            self.scaler.load_state_dict(state["grad_scaler"])
        restore_rng(state["rng_state"], self.device)
        self.state = TrainState.from_dict(state["train_state"])
        if self.guard is not None:
            self.guard = Guard(self.cfg.guards, self.state.guard_window)

    def _load(self, source: str | Path):
        return load_checkpoint(source, shard=self.par.checkpoint_read_shard())

    def resume(self, source: str) -> bool:
        """Load `source` ("auto": the latest checkpoint in checkpoint.dir, if any). False when auto found none."""
        if source == "auto":
            if self.ckpt_dir is None:
                raise UserError("--resume auto needs checkpoint.dir in the config")
            if latest_iteration(self.ckpt_dir) is None:
                return False
            source = str(self.ckpt_dir)
        state, saved_cfg, it_dir = self._load(source)
        saved_model = saved_cfg.get("model") or {}
        for key, value in to_dict(self.cfg.model).items():
            if key in saved_model and saved_model[key] != value:
                raise UserError(f"{it_dir}: checkpoint has model.{key}={saved_model[key]!r} but the config has "
                                f"{value!r}; resume needs the same model")
        self.load_state_dict(state)
        self.log.event({"step": self.state.iteration, "event": "resume", "from": str(it_dir),
                        "consumed_samples": self.state.consumed_samples})
        return True

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
        state, _, it_dir = self._load(self.ckpt_dir)
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
