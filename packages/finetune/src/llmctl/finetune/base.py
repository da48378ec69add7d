"""What every finetuning task shares: the base model loaded once (HF dir, llmctl checkpoint or Megatron-core
checkpoint, through core's `load_model`), the model config taken from it, and LoRA's freeze / adapter-only
checkpoint state / PEFT export.

The engine does the rest (schedule, accumulation, clipping, checkpoints, resume, logs, parallel layouts):
these are Task plugins, never a second loop.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import torch

from llmctl.core.errors import UserError
from llmctl.core.train.config import TrainConfig
from llmctl.core.train.task import Task

from .lora import adapter_weights, apply_lora, export_adapter, is_adapter_key
from .options import FinetuneOptions

ADAPTER_DIR = "adapter"  # inside each iter_N of a LoRA run: the PEFT adapter of that iteration


def load_base(options: FinetuneOptions):
    """The base model on the CPU in fp32 (moved to the training device by build_model): core's one path for
    starting from weights, as pretraining's checkpoint.load."""
    from llmctl.core.train.init_weights import load_initial_model

    return load_initial_model(options.base, options.base_iteration)


def has_val_split(prefix: str) -> bool:
    p = str(prefix).removesuffix("_packed")
    return any(Path(p + "_val").parent.glob(Path(p).name + "_val_packed_*_document.idx"))


def no_validation_note(prefix: str) -> str:
    """The run-log line when eval.iters asks for validation but `llmctl data sft` wrote no PREFIX_val files
    (the usual case for instruction data): without it the skip would be silent."""
    return f" > no validation split at {str(prefix).removesuffix('_packed')}_val; eval skipped"


def base_tokenizer_dir(loaded) -> str | None:
    tok = loaded.tokenizer
    return str(tok.path) if tok is not None and tok.path is not None else None


class FinetuneTask(Task):
    """Base of `sft` and `dpo`: `task.base` is loaded in the constructor, so `cfg.model` (which the driver
    uses for FLOPs, resume checks and the saved config.yaml) is the base's config, not the YAML's."""

    Options: type = FinetuneOptions

    def __init__(self, cfg: TrainConfig):
        super().__init__(cfg)
        self.check_layout(cfg.parallel)  # before the base is read: a layout error costs nothing
        if cfg.checkpoint.load:
            raise UserError("config key 'checkpoint.load' is pretraining's start from weights; a finetuning "
                            "task starts from 'task.base'")
        self.lora = self.options.lora_options()
        self._loaded = load_base(self.options)
        cfg.model = dataclasses.replace(self._loaded.config)  # the driver pads its vocab rows for the run's TP
        if not cfg.data.tokenizer:  # copied into every checkpoint, so chat/eval find it there
            cfg.data.tokenizer = base_tokenizer_dir(self._loaded)
        if cfg.data.seq_length > cfg.model.max_seq_len:
            raise UserError(f"config: data.seq_length {cfg.data.seq_length} exceeds the base model's "
                            f"max_seq_len {cfg.model.max_seq_len}")
        if self.lora is not None and self.lora.base_dtype == "bf16" and cfg.train.dtype != "bf16":
            raise UserError("task.lora.base_dtype bf16 needs train.dtype bf16 (autocast feeds the bf16 base)")
        self.adapter_names: list[str] = []
        self.notes: list[str] = []  # logged once before the first step (on_train_start)
        self.adapter_state: dict[str, torch.Tensor] | None = None
        self.pad_id = self._pad_id()

    def check_layout(self, parallel: dict) -> None:
        """A UserError for a parallel layout this task cannot train under (the options are parsed)."""

    def batch_tokens(self, batch: dict[str, Any]) -> int:
        """The micro-batch's real tokens (`batching` counts them; padding excluded), so the run log's
        tokens_per_s and MFU compare with a peer that pads."""
        return int(batch["num_tokens"])

    def _pad_id(self) -> int:
        tok = self._loaded.tokenizer
        pid = tok.pad_id if tok is not None else None
        return int(pid) if pid is not None and 0 <= pid < self.cfg.model.vocab_size else 0

    def dataset_name(self, default: str) -> str:
        name = self.cfg.data.dataset
        return default if name == "gpt" else name  # "gpt" is DataConfig's default: not chosen for this task

    def build_split(self, default: str, num_samples: int, split: str):
        from llmctl.core.plugins import lookup

        d = self.cfg.data
        if not d.path:
            raise UserError(f"config key 'data.path' is required: the --output-prefix of `llmctl data sft` "
                            f"({default} data)")
        if split == "val" and not has_val_split(d.path):
            self.notes.append(no_validation_note(d.path))
            return None  # finetuning data usually has no `PREFIX_val` files: then there is no validation
        return lookup("datasets", self.dataset_name(default))(
            d.path, seq_len=d.seq_length, num_samples=num_samples, seed=self.cfg.train.seed, split=split)

    def on_train_start(self, trainer: Any) -> None:
        """Before the first step (llmctl-finetune's driver callback): what the config asked for but will not
        happen, in the run log."""
        for note in self.notes:
            trainer.log.note(note)

    # ---- model ---------------------------------------------------------------------------------------
    def build_model(self, device: torch.device) -> torch.nn.Module:
        from llmctl.core.train.init_weights import to_training_device

        if self._loaded is None:
            raise RuntimeError("build_model called twice: the base is loaded once")
        loaded, self._loaded = self._loaded, None
        self.initialised_from = (str(loaded.path), loaded.source)
        return to_training_device(loaded.model, device, self.cfg.train.kernels, self.cfg.model.vocab_rows)

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        if self.lora is not None:
            self.adapter_names = apply_lora(model, self.lora)
        return model

    # ---- checkpoints ---------------------------------------------------------------------------------
    def saved_state(self, model_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.lora is None:
            return model_state
        self.adapter_state = {k: v for k, v in model_state.items() if is_adapter_key(k)}
        return self.adapter_state

    def load_saved_state(self, model: torch.nn.Module, state: dict[str, torch.Tensor], load: Any) -> None:
        if self.lora is None:
            return load(model, state, strict=True)
        expected = {k for k in _unwrapped(model).state_dict() if is_adapter_key(k)}
        found = {k.replace("module.", "").replace("_orig_mod.", "") for k in state}
        if found != expected:
            missing = sorted(expected - found)[:3] or sorted(found - expected)[:3]
            raise UserError(f"LoRA checkpoint does not match task.lora (first differing: {', '.join(missing)})")
        load(model, state, strict=False)

    def export(self, out_dir: str | os.PathLike) -> Path | None:
        """The PEFT adapter of the last saved state (LoRA runs only)."""
        if self.lora is None or self.adapter_state is None:
            return None
        return export_adapter(out_dir, self.cfg.model, self.adapter_state, self.lora,
                              base=str(Path(self.options.base).resolve()))


def _unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    while hasattr(model, "module") and isinstance(model.module, torch.nn.Module):
        model = model.module
    return getattr(model, "_orig_mod", model)


class AdapterExport:
    """Driver callback (registered on the bus): a LoRA run's checkpoints each carry `adapter/`, the PEFT
    adapter of that iteration, written before the checkpoint is published."""

    def on_checkpoint_publish(self, trainer: Any, tmp_dir: Path) -> None:
        task = getattr(trainer, "task", None)
        if isinstance(task, FinetuneTask):
            task.export(Path(tmp_dir) / ADAPTER_DIR)


__all__ = ["FinetuneTask", "AdapterExport", "adapter_weights"]
