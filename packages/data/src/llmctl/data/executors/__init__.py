"""Where data stages run: `run_stage` plans shards and resumes from markers; executors come from the bus.

Built-ins `local` (process pool) and `ray` (Ray tasks) register through `register_executors(register)` like a
third party's would; `get_executor("ray", workers=4, address="auto")` builds one by name.
"""

from __future__ import annotations

from typing import Any

from .base import Executor, ShardDocuments, Shards, ShardStage, resumed_note, run_stage, run_stage_in



def builtin_executors() -> dict[str, type[Executor]]:
    from .local import LocalExecutor
    from .ray import RayExecutor

    return {"local": LocalExecutor, "ray": RayExecutor}


def get_executor(name: str = "local", **options: Any) -> Executor:
    """An executor by registered name, built with `options` (workers, address, ...)."""
    from llmctl.core.plugins import lookup

    return lookup("executors", name)(**options)


__all__ = ["Executor", "ShardDocuments", "ShardStage", "Shards", "get_executor", "resumed_note", "run_stage", "run_stage_in"]
