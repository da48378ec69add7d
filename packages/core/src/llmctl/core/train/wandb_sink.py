"""The `wandb` metric sink (the single-GPU tutorial's curves): `logging.sinks: [jsonl, wandb]`.

Every JSONL record becomes one wandb history row of its finite numbers, with llmctl's `step` as the x axis
of every chart (`define_metric("*", step_metric="step")`) rather than wandb's own counter: a resumed or
rolled-back run logs some steps twice, which wandb's monotonic `_step` would drop, and the JSONL keeps. The
run record (`run_record.py`) becomes the wandb run's config (the resolved training config plus
`environment`). Offline or online is wandb's choice (`WANDB_MODE=offline`, `wandb sync` later); the project
is $WANDB_PROJECT (default "llmctl"), the run is named after the llmctl run and grouped by it, so the
processes of a resumed run sit together. Files go under LOG_DIR/wandb/.

wandb is an extra (`pip install 'llmctl-core[wandb]'`): without it, naming the sink is one error line.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from ..errors import UserError
from .run_record import is_run_record


def numbers(record: dict[str, Any]) -> dict[str, float | int]:
    """The finite int/float values of a record (what a history row can hold; the JSONL writes NaN as null)."""
    return {k: v for k, v in record.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


class WandbSink:
    def __init__(self, log_dir: Path, run_name: str):
        try:
            import wandb
        except ImportError:
            raise UserError("logging sink 'wandb' needs the wandb package: `pip install 'llmctl-core[wandb]'` "
                            "(or drop it from logging.sinks)") from None
        Path(log_dir).mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT") or "llmctl", name=run_name, group=run_name,
                              dir=str(log_dir), job_type="train", reinit="create_new",
                              settings=wandb.Settings(console="off"))
        self.run.define_metric("step")
        self.run.define_metric("*", step_metric="step")

    def write(self, record: dict[str, Any]) -> None:
        if is_run_record(record):
            run = record["run"]
            self.run.config.update({**run["config"], "environment": run["environment"]}, allow_val_change=True)
            return
        row = numbers(record)
        if row:
            self.run.log(row)

    def close(self) -> None:
        self.run.finish()
