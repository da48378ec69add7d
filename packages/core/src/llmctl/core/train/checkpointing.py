"""The driver's checkpoint side: what a checkpoint holds for an exact resume, saving it from every rank that
holds a shard, resuming from it, and the guards' rollback to it. A mixin of `Trainer` (loop.py), which owns the
cadence; these methods read the trainer's task, parallelism, optimizer, schedule and state.

`checkpoint.format: mcore` writes the same iteration directory with the weights as megatron-core shards
(`mp_rank_*`, what MindSpeed loads with --no-load-optim --no-load-rng) gathered on the writer, and llmctl's
resume state (optimizer, schedule, RNG, counters) per shard under `llmctl_resume/`, where Megatron does not
look; config.yaml and the tokenizer as always, published atomically, pointer last.

A checkpoint resumes at any tensor-parallel size: its vocabulary weights (and their AdamW moments) were
padded for the saving run's TP and are fitted to this run's padding on load, the real rows unchanged.

In a run in stages, config.yaml's `model:` is the model as that iteration's stage trains it (its RoPE base,
scaling and length), so `generate`, `eval run` and the converters rebuild what was trained; a resume checks
the model against its own plan at that iteration. A branch (`--from CKPT --stage NAME`) starts from the full
state of a checkpoint of another run (or of its own run's earlier stage).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from ..config import to_dict
from ..errors import UserError
from ..model_config import VOCAB_LAYOUT_FIELDS
from ..nn.build import VOCAB_PARAMS, fit_vocab_rows, fit_vocab_state
from ..nn.checkpoint import latest_iteration, load_checkpoint, resolve_iteration_dir, save_sharded_checkpoint
from ..nn.mcore_io import check_mcore_layout, is_mcore_checkpoint, read_mcore_state, write_mcore_shards
from ..nn.model import Transformer
from .guards import Guard, LossSpikeGuard
from .optim import PARAM_NAMES_KEY, adamw_impl, decay_groups, set_scheduled_lr
from .state import TrainState, capture_rng, restore_rng

CHECKPOINT_VERSION = 3.0  # Megatron's field name; our layout of the state dict below
RESUME_DIR = "llmctl_resume"  # checkpoint.format mcore: llmctl's resume state, one file per shard


class Checkpointing:
    def state_dict(self) -> dict[str, Any]:
        self.state.guard_window = list(self.guard.window) if self.guard else []
        self.state.loss_windows = self.spike.state() if self.spike is not None else {}
        self.state.stage_tokens = self.saved_stage_tokens()
        self.state.stage = self.plan.stage_at(max(self.state.iteration, 1)).name
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
        publish = lambda tmp: self.callbacks.call("on_checkpoint_publish", self, tmp)  # noqa: E731
        if self.cfg.checkpoint.format == "mcore":
            shard, publish = self._mcore_save(state, shard, publish)
        config = to_dict(self.cfg)
        config["model"] = to_dict(self.plan.model_at(self.state.iteration))  # as this iteration's stage trains it
        path = save_sharded_checkpoint(
            self.ckpt_dir, self.state.iteration, shard, state if shard else None, config,
            tokenizer_dir=self.tokenizer_dir, keep=self.cfg.checkpoint.keep, is_writer=self.par.is_log_writer,
            barrier=self.par.barrier, before_publish=publish)
        self.log.note(f"  successfully saved checkpoint from iteration {self.state.iteration:7d} to {path}")

    def check_checkpoint_format(self) -> None:
        """Before training: an mcore layout the model cannot be cut into, or a task that does not save the
        whole model (LoRA keeps adapters), is a one-line error now rather than at the first save."""
        ck = self.cfg.checkpoint
        if ck.format != "mcore" or self.ckpt_dir is None:
            return
        check_mcore_layout(self._mcore_model(), ck.mcore_tp, ck.mcore_pp, ck.mcore_num_layer_list)
        names = dict.fromkeys(self.par.unwrap(self.module).state_dict())
        if set(self.task.saved_state(names)) != set(names):
            raise UserError(f"checkpoint.format mcore saves the whole model, but task {self.cfg.train.task} "
                            "saves only part of it (LoRA adapters); use checkpoint.format native")

    def _mcore_model(self):
        """The model as checkpoint.format mcore writes it (as this iteration's stage trains it: its RoPE base):
        its vocabulary padded as MindSpeed pads it for the same make-vocab-size-divisible-by at
        --tensor-model-parallel-size mcore_tp."""
        m = self.plan.model_at(self.state.iteration)
        return dataclasses.replace(m, padded_vocab_size=m.padded_for(self.cfg.checkpoint.mcore_tp))

    def _mcore_save(self, state: dict[str, Any], shard: str | None, publish):
        """(this rank's resume-state shard, the writer's publish step that adds the mcore weights)."""
        model, ck = state.pop("model"), self.cfg.checkpoint  # whole on the writer ({} or partial elsewhere)
        extra = {"consumed_train_samples": self.state.consumed_samples, "train_iters": self.total,
                 "global_batch_size": self.gbs, "micro_batch_size": self.mbs, "seq_length": self.seq}
        mcore_cfg = self._mcore_model()

        def write(tmp: Path) -> None:
            write_mcore_shards(tmp, self.state.iteration, model, mcore_cfg, ck.mcore_tp, ck.mcore_pp,
                               ck.mcore_num_layer_list, extra_args=extra)
            publish(tmp)

        return (f"{RESUME_DIR}/{shard}" if shard else None), write

    def fit_vocab(self, state: dict[str, Any], source: Any) -> None:
        """The vocabulary weights and their optimizer moments (in place in `state`) fitted to this run's
        padded rows when the saving run padded for another TP: the real rows kept, the padding re-made."""
        rows, model = self.cfg.model.vocab_rows, state["model"]
        if all(model[n].shape[0] == rows for n in VOCAB_PARAMS if isinstance(model.get(n), torch.Tensor)):
            return  # same padding, or a task that saves no vocabulary weights (LoRA's adapters)
        state["model"] = fit_vocab_state(model, self.cfg.model, str(source))
        optimizer = state["optimizer"]
        for group, names in zip(optimizer["param_groups"], self._optimizer_names(optimizer, source)):
            for index, name in zip(group["params"], names):
                moments = optimizer["state"].get(index)
                if name in VOCAB_PARAMS and moments is not None:
                    optimizer["state"][index] = {
                        k: fit_vocab_rows(v, self.cfg.model.vocab_size, rows, f"{source}: {name} {k}")
                        if isinstance(v, torch.Tensor) and v.dim() else v for k, v in moments.items()}

    def _optimizer_names(self, optimizer: dict[str, Any], source: Any) -> list[list[str]]:
        """The parameter names of each saved param group: named by a sharded save, else in torch's numbering
        of the whole model's optimizer (`decay_groups` of its parameters, in the model's order)."""
        if PARAM_NAMES_KEY in optimizer:
            return optimizer[PARAM_NAMES_KEY]
        with torch.device("meta"):
            whole = Transformer(self.cfg.model)
        name_of = {id(p): n for n, p in whole.named_parameters()}
        groups = [[name_of[id(p)] for p in g] for g in decay_groups(list(whole.parameters()))]
        if [len(g["params"]) for g in optimizer["param_groups"]] != [len(g) for g in groups]:
            raise UserError(f"{source}: its vocabulary was padded for another tensor-parallel size and its "
                            "optimizer state does not cover the whole model, so it cannot be re-padded; resume "
                            "at the saving run's parallel.tp")
        return groups

    def load_state_dict(self, state: dict[str, Any], source: Any = "checkpoint") -> None:
        self.fit_vocab(state, source)
        self.task.load_saved_state(self.module, state["model"], self.par.load_model_state_dict)
        self.par.load_optimizer_state_dict(self.module, self.optimizer, state["optimizer"])
        for group in self.optimizer.param_groups:  # the device may differ from the one that saved
            group.update(adamw_impl(self.params))
        self.scheduler.load_state_dict(state["opt_param_scheduler"])
        if self.scaler is not None and state.get("grad_scaler"):
            self.scaler.load_state_dict(state["grad_scaler"])
        restore_rng(state["rng_state"], self.device)
        self.state = TrainState.from_dict(state["train_state"])
        if self.state.consumed_tokens is None:  # saved before stages: one sequence length
            self.state.consumed_tokens = self.state.consumed_samples * self.cfg.data.seq_length
        if self.guard is not None:
            self.guard = Guard(self.cfg.guards, self.state.guard_window)
        if self.spike is not None:
            self.spike = LossSpikeGuard(self.cfg.guards.loss_spike, self.state.loss_windows)
        set_scheduled_lr(self.optimizer, self.scheduler, self.lr_base)  # this plan's LR at this iteration
        self.stage = None  # the next step enters its stage: shapes, model, data position

    def _load(self, source: str | Path):
        """(state, config, it_dir) of a native or an mcore-format checkpoint (weights gathered from mp_rank_*)."""
        it_dir = resolve_iteration_dir(source)
        shard = self.par.checkpoint_read_shard()
        if not (it_dir / RESUME_DIR).is_dir():
            if is_mcore_checkpoint(it_dir):
                raise UserError(f"{it_dir}: a megatron-core checkpoint without llmctl's resume state "
                                f"({RESUME_DIR}/); start from its weights with checkpoint.load instead")
            return load_checkpoint(it_dir, shard=shard)
        state, config, _ = load_checkpoint(it_dir, shard=f"{RESUME_DIR}/{shard}")
        cfg, state["model"], _, _ = read_mcore_state(it_dir)
        if cfg.tie_embeddings:
            state["model"]["lm_head.weight"] = state["model"]["embed.weight"]
        return state, config, it_dir

    def resume(self, source: str) -> bool:
        """Load `source` ("auto": the latest checkpoint in checkpoint.dir, if any). False when auto found none."""
        if source == "auto":
            if self.ckpt_dir is None:
                raise UserError("--resume auto needs checkpoint.dir in the config")
            if latest_iteration(self.ckpt_dir) is None:  # said, so a resume that starts at 0 is never a surprise
                self.log.note(f"resume auto: no checkpoint in {self.ckpt_dir} yet, starting at step 0")
                return False
            source = str(self.ckpt_dir)
        it_dir = self._load_checked(source, "resume")
        self.log.event({"step": self.state.iteration, "event": "resume", "from": str(it_dir),
                        "consumed_samples": self.state.consumed_samples})
        return True

    def start_branch(self) -> None:
        """A branch's first start: the full state of the checkpoint it branches from (weights, optimizer,
        RNG, every data position), then its own stage from the next step."""
        b = self.cfg.branch
        it_dir = self._load_checked(b.checkpoint, "branch from")
        self.log.event({"step": self.state.iteration, "event": "branch", "from": str(it_dir),
                        "origin_run": b.origin_run, "iteration": self.state.iteration, "stage": b.stage,
                        "consumed_samples": self.state.consumed_samples})

    def _load_checked(self, source: str | Path, what: str) -> Path:
        """Load a checkpoint whose model is this run's at that iteration (its stage's RoPE base and length)."""
        state, saved_cfg, it_dir = self._load(source)
        iteration = int(state.get("iteration", 0))
        saved_model = saved_cfg.get("model") or {}
        for key, value in to_dict(self.plan.model_at(iteration)).items():
            if key in saved_model and key not in VOCAB_LAYOUT_FIELDS and saved_model[key] != value:
                raise UserError(f"{it_dir}: checkpoint has model.{key}={saved_model[key]!r} but the config has "
                                f"{value!r} at iteration {iteration}; {what} needs the same model")
        saved_stage = (state.get("train_state") or {}).get("stage")
        here = self.plan.stage_at(max(iteration, 1)).name
        if what == "resume" and self.plan.explicit and saved_stage not in (None, here):
            raise UserError(f"{it_dir}: iteration {iteration} was in stage '{saved_stage}', but this config's "
                            f"stages have '{here}' there; resume with the config (and --from/--stage) it ran with")
        self.load_state_dict(state, it_dir)
        return it_dir

    def rollback(self, step: int, reason: str, skip_samples: int = 0) -> None:
        """After guards.max_consecutive bad steps, or a loss spike whose action is rollback: reload the last
        checkpoint (model, optimizer, schedule, RNG) but keep the data positions, so the batches since it are
        skipped, not replayed, and `skip_samples` more past the bad step's batch (PaLM's recipe)."""
        g = self.cfg.guards
        what = "a loss spike" if reason.startswith("loss spike") else f"{g.max_consecutive} bad steps in a row"
        if self.state.rollbacks >= g.max_rollbacks:
            raise UserError(f"guards: {what} at iteration {step} ({reason}) after "
                            f"{self.state.rollbacks} rollbacks; stopping. Inspect the data near sample "
                            f"{self.state.consumed_samples} or lower train.lr")
        if self.ckpt_dir is None or latest_iteration(self.ckpt_dir) is None:
            raise UserError(f"guards: {what} at iteration {step} ({reason}) and "
                            "no checkpoint to roll back to (set checkpoint.dir and checkpoint.interval)")
        live, key, seq = self.state, self.stage.data_key, self.seq
        state, _, it_dir = self._load(self.ckpt_dir)
        self.load_state_dict(state, it_dir)
        jumped = live.consumed_samples - self.state.consumed_samples + skip_samples
        self.state.consumed_samples = live.consumed_samples + skip_samples
        self.state.consumed_tokens = live.consumed_tokens + skip_samples * seq
        self.state.data_positions = {**live.data_positions}
        self.state.data_positions[key] = live.data_positions[key] + skip_samples
        self.state.skipped_samples = live.skipped_samples + jumped
        self.state.skipped_iters = live.skipped_iters
        self.state.rollbacks = live.rollbacks + 1
        self.log.event({"step": step, "event": "rollback", "to_iteration": self.state.iteration,
                        "reason": reason, "skipped_samples": jumped, "checkpoint": str(it_dir),
                        "data_position": self.state.data_positions[key]})
        self._reset_interval()
        if self.bar is not None:
            self.bar.n = self.state.iteration
            self.bar.refresh()
