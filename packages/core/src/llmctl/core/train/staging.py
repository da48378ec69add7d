"""The driver's stage side: the datasets of every stage, crossing a boundary, and where a step's samples are.
A mixin of `Trainer` (loop.py), which calls `enter_stage` before the first step of each stage (and after a
resume or rollback); the plan itself is torch-free (`stages.py`).

Crossing a boundary keeps the weights and the optimizer state. What changes is applied from outside: the
batch shape and accumulation, the model's RoPE base / scaling (its frequency buffer rebuilt in place, so
every wrapper that holds it sees the new one; the model file is not touched), the parallel strategy's
shapes (`Parallelism.reshape`: a pipeline's schedule), and the data: each dataset (a blend at a sequence
length) keeps its own position, so a resume anywhere, inside a stage or exactly at a boundary, reads the
samples an uninterrupted run reads. The guards' windows restart at a boundary: a new blend or length moves
the loss and the grad norm legitimately.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from typing import Any

import torch

from ..model_config import ModelConfig
from .stages import Stage


@torch.no_grad()
def apply_rope(model: torch.nn.Module, cfg: ModelConfig) -> None:
    """Set `model`'s RoPE base and scaling to `cfg`'s from outside: its config (so a later `.to()` recomputes
    the same frequencies) and its frequency buffer, rebuilt in place (same tensor: wrappers that captured it,
    e.g. DDP's buffer list, keep seeing it)."""
    from ..nn.model import rope_inv_freq

    old = model.cfg
    if (old.rope_theta, old.rope_scaling, old.max_seq_len) == (cfg.rope_theta, cfg.rope_scaling, cfg.max_seq_len):
        return
    model.cfg = dataclasses.replace(old, rope_theta=cfg.rope_theta, rope_scaling=cfg.rope_scaling,
                                    max_seq_len=cfg.max_seq_len)
    model.inv_freq.copy_(rope_inv_freq(model.cfg).to(model.inv_freq.device, model.inv_freq.dtype))


class Staging:
    # ---- data ------------------------------------------------------------------------------------------
    def build_stage_data(self) -> None:
        """Every stage's (train, val) datasets, in order of first use; a stage sharing a blend and length
        with another shares its dataset and data position."""
        self.data_needs = self.plan.data_needs(self.cfg.eval.iters)
        self.datasets = {}
        for key, need in self.data_needs.items():
            order = {"curriculum": need.curriculum} if need.curriculum else {}  # tasks without it: the old seam
            self.datasets[key] = self.task.build_stage_datasets(need.blend, need.seq_length, need.train_samples,
                                                                need.val_samples, **order)

    def set_shape(self, stage: Stage) -> None:
        """The batch shape, accumulation and datasets of `stage` (no model or data-position change)."""
        dp = self.par.dp_size
        self.gbs, self.mbs, self.seq = stage.global_batch_size, stage.micro_batch_size, stage.seq_length
        self.accum = self.gbs // (self.mbs * dp)
        self.flops_per_token = self.cfg.model.flops_per_token(self.seq)
        # A fixed divisor keeps backward's gradients in the usual range (fp16 scaling); the exact
        # per-token normalisation is applied to the gradients once the step's global count is known.
        self.loss_divisor = float(self.mbs * self.seq * self.accum * dp)
        self.train_ds, self.val_ds = self.datasets[stage.data_key]

    def data_position(self) -> int:
        """The next sample of the current stage's dataset."""
        key = self.stage.data_key
        if key not in self.state.data_positions:  # a checkpoint from before stages: one dataset
            self.state.data_positions[key] = self.state.consumed_samples if len(self.datasets) == 1 else 0
        return self.state.data_positions[key]

    # ---- crossing a boundary -----------------------------------------------------------------------------
    def enter_stage(self, stage: Stage) -> None:
        crossing = self.state.window_stage != stage.name
        self.stage = stage
        self.set_shape(stage)
        self.par.reshape(self)
        apply_rope(self.par.unwrap(self.module), stage.model)
        if crossing:  # not a resume or rollback inside the stage: its windows and counts start afresh
            self.state.window_stage = stage.name
            self.state.stage_tokens = {}
            if self.guard is not None:
                self.guard.window.clear()
            if self.spike is not None:
                self.spike.reset()
        self.stage_tokens = torch.tensor([float(self.state.stage_tokens.get(n, 0.0)) for n in self.channel_metrics],
                                         device=self.device)
        self.data = self._loader(self.train_ds, self.data_position())
        if self.plan.explicit:
            self.log.note(f" > stage {stage.index + 1}/{len(self.plan.stages)} '{stage.name}': "
                          f"{self.plan.describe(stage)}")
            for key, value in (("seq_length", self.seq), ("global_batch_size", self.gbs),
                               ("micro_batch_size", self.mbs), ("rope_theta", stage.model.rope_theta)):
                self.log.note(f"  {key} {'.' * (48 - len(key))} {value}")
            self.log.event({"step": self.state.iteration, "event": "stage", "stage": stage.name,
                            "index": stage.index, "from_iteration": stage.start + 1, "to_iteration": stage.end,
                            "seq_length": stage.seq_length, "global_batch_size": stage.global_batch_size,
                            "micro_batch_size": stage.micro_batch_size, "rope_theta": stage.model.rope_theta,
                            "rope_scaling": stage.model.rope_scaling, "blend": _jsonable(stage.blend),
                            "data_position": self.data_position(), "lr": stage.lr, "min_lr": stage.min_lr,
                            "schedule": stage.schedule, "decay_style": stage.decay_style})

    @property
    def channel_metrics(self) -> list[str]:
        """The task's per-source losses ("loss/<source>"): their counts are each source's trained tokens."""
        return [n for n in self.metric_names if n.startswith("loss/")]

    def count_stage_tokens(self, sums: torch.Tensor) -> None:
        """Add a step's per-source token counts (its packed sums, reduced over ranks) to the stage's."""
        m = len(self.metric_names)
        idx = [i for i, n in enumerate(self.metric_names) if n.startswith("loss/")]
        if idx:
            self.stage_tokens += sums[2 + m:2 + 2 * m][idx]

    def saved_stage_tokens(self) -> dict[str, float]:
        return dict(zip(self.channel_metrics, self.stage_tokens.tolist())) if self.channel_metrics else {}

    def end_stage(self, stage: Stage) -> None:
        """The stage's last step: log what it trained on (tokens per source and their shares)."""
        if not self.plan.explicit:
            return
        by_source = {n[len("loss/"):]: v for n, v in self.saved_stage_tokens().items() if v}
        total = sum(by_source.values())
        self.log.event({"step": self.state.iteration, "event": "stage_end", "stage": stage.name,
                        "consumed_tokens": self.state.consumed_tokens,
                        "tokens_by_source": {k: int(v) for k, v in by_source.items()},
                        "share": {k: v / total for k, v in by_source.items()} if total else {}})

    # ---- where a step's samples are ------------------------------------------------------------------
    def sample_window(self, start: int, channel: str | None = None) -> dict[str, Any]:
        """The samples of the step that began at data position `start` in the current dataset (those of one
        source when `channel` is "loss/<source>"), and how `llmctl data inspect` shows their documents."""
        end = start + self.gbs
        positions = None
        sources = getattr(self.train_ds, "sample_sources", None)
        if channel and channel.startswith("loss/") and sources is not None and channel in self.channel_metrics:
            want = self.channel_metrics.index(channel)
            n = len(sources)
            positions = [p for p in range(start, end) if int(sources[p % n]) == want]
        need = self.data_needs[self.stage.data_key]
        blend = need.blend if isinstance(need.blend, str) else json.dumps(_jsonable(need.blend))
        inspect = ["llmctl", "data", "inspect", "--blend", str(blend), "--seq-length", str(need.seq_length),
                   "--num-samples", str(need.train_samples), "--seed", str(self.cfg.train.seed),
                   "--positions", f"{start}:{end}"]
        if need.curriculum:
            inspect += ["--curriculum", json.dumps(need.curriculum)]
        if self.cfg.data.tokenizer:
            inspect += ["--tokenizer", str(self.cfg.data.tokenizer)]
        out = {"sample_positions": [start, end], "blend": _jsonable(need.blend), "seq_length": need.seq_length,
               "num_samples": need.train_samples, "seed": self.cfg.train.seed, "inspect": shlex.join(inspect)}
        if positions is not None:
            out["channel_positions"] = positions
        return out


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
