"""The `task:` keys of the finetuning tasks (torch-free, so config errors need no torch).

One mapping from the issue's `method: full | lora | dpo` to the engine: two tasks, `sft` and `dpo`, each
training every weight or, with a `lora:` section, adapters on a frozen base.

    method: full  ->  train.task sft, no `lora:`          method: lora -> train.task sft + `lora:` (defaults ok)
    method: dpo   ->  train.task dpo (+ `lora:` for LoRA-DPO, reference = base with adapters off)
"""

from __future__ import annotations

import dataclasses

from llmctl.core.config import from_dict
from llmctl.core.errors import UserError

METHODS = {"full": "sft", "lora": "sft", "dpo": "dpo"}
LOSS_TYPES = ("sigmoid", "hinge", "ipo")
REFERENCES = ("model", "precomputed")
#: target spellings -> native leaf module names (MindSpeed's mcore names as aliases).
TARGET_ALIASES = {
    "q": ["q_proj"], "k": ["k_proj"], "v": ["v_proj"], "o": ["o_proj"],
    "gate": ["gate_proj"], "up": ["up_proj"], "down": ["down_proj"],
    "linear_qkv": ["q_proj", "k_proj", "v_proj"], "linear_proj": ["o_proj"],
    "linear_fc1": ["gate_proj", "up_proj"], "linear_fc2": ["down_proj"],
    "all": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}


@dataclasses.dataclass
class LoraOptions:
    r: int = 8  # MindSpeed --lora-r
    alpha: float = 16.0  # --lora-alpha
    dropout: float = 0.0
    rslora: bool = False  # scale alpha / sqrt(r) instead of alpha / r
    # aliases above, native leaf names (q_proj, ...) or globs over native module names (layers.0.attn.*)
    targets: list = dataclasses.field(default_factory=lambda: ["all"])
    base_dtype: str | None = None  # "bf16": keep the frozen base in bf16 (with train.dtype bf16)

    def validate(self) -> None:
        if self.r < 1:
            raise UserError(f"config key 'task.lora.r' must be >= 1, got {self.r}")
        if not 0 <= self.dropout < 1:
            raise UserError(f"config key 'task.lora.dropout' must be in [0, 1), got {self.dropout}")
        if isinstance(self.targets, str):
            self.targets = self.targets.replace(",", " ").split()
        if not self.targets:
            raise UserError("config key 'task.lora.targets' names no module")
        if self.base_dtype not in (None, "fp32", "bf16"):
            raise UserError(f"config key 'task.lora.base_dtype': '{self.base_dtype}' is not one of fp32, bf16")


@dataclasses.dataclass
class FinetuneOptions:
    base: str | None = None  # HF dir, llmctl checkpoint or Megatron-core checkpoint (MindSpeed --load)
    base_iteration: int | None = None
    method: str | None = None  # full | lora | dpo (optional: train.task and `lora:` say the same)
    lora: dict | None = None  # LoraOptions keys; absent = train every weight
    prompt_type: str | None = None  # the template the data was made with; recorded for `llmctl chat`

    def validate(self) -> None:
        if not self.base:
            raise UserError("config key 'task.base' is required: the model to finetune (an HF dir, a llmctl "
                            "checkpoint or a Megatron-core checkpoint)")
        if self.method is not None and self.method not in METHODS:
            raise UserError(f"config key 'task.method': '{self.method}' is not one of {', '.join(METHODS)}")

    def lora_options(self) -> LoraOptions | None:
        if self.lora is None and self.method != "lora":
            return None
        return from_dict(LoraOptions, self.lora or {}, prefix="task.lora")


@dataclasses.dataclass
class SFTOptions(FinetuneOptions):
    # samples end to end in one row, no compute on padding (None: on unless parallel.cp/pp > 1); false: rows
    padding_free: bool | None = None
    # padded rows only — MindSpeed --variable-seq-lengths: pad each micro-batch to its longest sample (else
    # to data.seq_length)
    variable_seq_lengths: bool = True
    pad_to_multiple_of: int = 8  # a padded row's length, or a padding-free row's, rounds up to this

    def validate(self) -> None:
        super().validate()
        if self.method not in (None, "full", "lora"):
            raise UserError(f"task.method {self.method} runs train.task dpo, not sft")
        if self.method == "full" and self.lora is not None:
            raise UserError("task.method full trains every weight; remove the 'task.lora' section or use lora")
        if self.pad_to_multiple_of < 1:
            raise UserError("config key 'task.pad_to_multiple_of' must be >= 1")


@dataclasses.dataclass
class DPOOptions(FinetuneOptions):
    beta: float = 0.1
    loss_type: str = "sigmoid"  # sigmoid (cDPO with label_smoothing) | hinge | ipo (length-averaged)
    label_smoothing: float = 0.0  # cDPO: the share of pairs assumed flipped (sigmoid only)
    reference: str = "model"  # model: a frozen copy (LoRA: adapters off) | precomputed: one pass before training
    padding_free: bool | None = None  # as for sft: answers end to end in one row (None: unless cp/pp > 1)
    share_prompt: bool = True  # padding-free: a pair's prompt computed once, both answers attending to it
    pad_to_multiple_of: int = 8

    def validate(self) -> None:
        super().validate()
        if self.method not in (None, "dpo"):
            raise UserError(f"task.method {self.method} runs train.task sft, not dpo")
        if self.loss_type not in LOSS_TYPES:
            raise UserError(f"config key 'task.loss_type': '{self.loss_type}' is not one of {', '.join(LOSS_TYPES)}")
        if self.reference not in REFERENCES:
            raise UserError(f"config key 'task.reference': '{self.reference}' is not one of {', '.join(REFERENCES)}")
        if self.beta <= 0:
            raise UserError(f"config key 'task.beta' must be > 0, got {self.beta}")
        if not 0 <= self.label_smoothing < 0.5:
            raise UserError(f"config key 'task.label_smoothing' must be in [0, 0.5), got {self.label_smoothing}")
        if self.label_smoothing and self.loss_type != "sigmoid":
            raise UserError("config key 'task.label_smoothing' applies to loss_type sigmoid (cDPO) only")
