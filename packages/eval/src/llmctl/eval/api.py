"""The evaluator contract: what a plugin registers (Evaluator), what it is handed (EvalContext) and what it
returns (TaskResult). Documented in docs/evaluators.md; keep it small and stable.

Torch-free at import, so `llmctl --help` and `llmctl eval list` stay cheap.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any, Hashable, Protocol, Sequence, runtime_checkable

from llmctl.core.errors import UserError

if TYPE_CHECKING:
    import click
    import torch

    from llmctl.core.nn.loading import LoadedModel
    from llmctl.core.tokenizer import Tokenizer


@dataclasses.dataclass
class TaskResult:
    """One task's outcome. `metrics` holds the headline numbers (the first key leads logs and compare),
    e.g. {"acc": 0.31, "correct": 380, "total": 1221} or {"ppl": 12.3, "tokens": 40960}."""

    task: str
    metrics: dict[str, Any]
    subjects: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    categories: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    records: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # -> predictions/<task>.jsonl
    data_files: list[str] = dataclasses.field(default_factory=list)  # hashed into results.json's data_sha256
    info: dict[str, Any] = dataclasses.field(default_factory=dict)  # split, shots, skipped subjects, notes


@dataclasses.dataclass
class EvalContext:
    """Everything an evaluator needs, plus the shared scoring helpers bound to the loaded model."""

    loaded: "LoadedModel"
    out_dir: Path
    data_dir: Path | None = None
    shots: int = 5
    mode: str = "logits"  # logits | generate | cloze
    max_new_tokens: int = 64
    batch_size: int | None = None  # None = auto
    limit: int | None = None  # items per subject (MC) / documents (ppl)
    subjects: list[str] | None = None
    split: str | None = None  # None = the benchmark's default
    options: dict[str, Any] = dataclasses.field(default_factory=dict)  # values of evaluators' add_options()
    iteration: int | None = None  # --iteration: which iteration of a checkpoint dir was loaded (None: latest)

    # ---- model -------------------------------------------------------------------------------------------
    @property
    def model(self):
        return self.loaded.model

    @property
    def tokenizer(self) -> "Tokenizer":
        if self.loaded.tokenizer is None:
            raise UserError(f"{self.loaded.path}: no tokenizer next to the model; pass --tokenizer DIR")
        return self.loaded.tokenizer

    @property
    def device(self) -> "torch.device":
        return next(self.model.parameters()).device

    def require_data_dir(self, task: str) -> Path:
        if self.data_dir is None:
            raise UserError(f"task '{task}' needs --data-dir (e.g. --data-dir {task}=PATH)")
        return self.data_dir

    # ---- shared scoring helpers (see scoring.py) ----------------------------------------------------------
    def encode(self, text: str) -> list[int]:
        from .scoring import encode_prompt

        return encode_prompt(self.tokenizer, text)

    def choice_ids(self, context: str, choices: Sequence[str]) -> list[int]:
        from .scoring import choice_token_ids

        return choice_token_ids(self.tokenizer, context, choices)

    def score_choices(self, prompts: Sequence[Sequence[int]], choice_ids: Sequence[int], *,
                      groups: Sequence[Hashable] | None = None, desc: str = "scoring") -> list[list[float]]:
        from .scoring import score_choices

        return score_choices(self.model, prompts, choice_ids, groups=groups, batch_size=self.batch_size, desc=desc)

    def generate(self, prompts: Sequence[Sequence[int]], max_new_tokens: int | None = None,
                 desc: str = "generating") -> list[str]:
        from .scoring import generate_texts

        return generate_texts(self.model, self.tokenizer, prompts, batch_size=self.batch_size, desc=desc,
                              max_new_tokens=self.max_new_tokens if max_new_tokens is None else max_new_tokens)

    # ---- data parallel (under torchrun) -------------------------------------------------------------------
    @property
    def rank(self) -> int:
        dist = _dist()
        return dist.get_rank() if dist else 0

    @property
    def world_size(self) -> int:
        dist = _dist()
        return dist.get_world_size() if dist else 1

    def shard(self, items: Sequence[Any]) -> list[Any]:
        """This rank's share of `items` (every world_size-th, starting at rank); all of them when alone."""
        return list(items[self.rank::self.world_size])

    def gather(self, items: list[Any]) -> list[Any]:
        """Every rank's `items` concatenated in rank order, on every rank (picklable items)."""
        dist = _dist()
        if dist is None:
            return list(items)
        parts: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(parts, items)
        return [x for part in parts for x in part]


def _dist():
    """torch.distributed when a process group is up (torchrun), else None."""
    try:
        import torch.distributed as dist
    except ImportError:
        return None
    return dist if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1 else None


@runtime_checkable
class Evaluator(Protocol):
    """What `register_evaluators(register)` registers: `register("name", evaluator)`.

    `name` and `description` show in `llmctl eval list`. `add_options()` is optional: extra click options for
    `llmctl eval run` (prefix them with the task name; their values arrive in `ctx.options`). `run(ctx)` does
    the work and returns a TaskResult; raise UserError for bad input."""

    name: str
    description: str

    def run(self, ctx: EvalContext) -> TaskResult: ...


def evaluator_options(evaluator: Any) -> list["click.Option"]:
    add = getattr(evaluator, "add_options", None)
    return list(add()) if callable(add) else []
