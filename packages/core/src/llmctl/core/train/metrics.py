"""Training logs: JSONL records for programs, Megatron's human lines for people and for tools that already
parse Megatron/MindSpeed logs (`llmctl plot` reads both), and optional TensorBoard.

Metric sinks are plugins (`register_loggers`: name -> factory(log_dir, run_name) returning an object with
`write(record)` and `close()`); jsonl and tensorboard are core's, and wandb (`wandb_sink.py`). Logs are
append-only streams, so a resumed run continues the same files. Torch-free.
"""

from __future__ import annotations

import json
import math
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

from ..errors import UserError


# ---- Megatron's human lines (megatron/training/training.py: training_log, evaluate_and_print_results) ----
def _stamp() -> str:
    return f" [{datetime.now().strftime('%Y-%m-%d %H:%M:%S.%f')}]"


def train_line(r: dict[str, Any], *, train_iters: int, global_batch_size: int) -> str:
    """One Megatron `training_log` line from a JSONL record; channel losses print as `lm loss/<source>`. A run
    in stages adds `consumed tokens` (the sequence length changes between stages) and `stage` at the end,
    so the fields Megatron's parsers read keep their order."""
    s = _stamp()
    s += " iteration {:8d}/{:8d} |".format(r["step"], train_iters)
    s += " consumed samples: {:12d} |".format(r["consumed_samples"])
    if r.get("skipped_samples"):
        s += " skipped samples: {:12d} |".format(r["skipped_samples"])
    s += " elapsed time per iteration (ms): {:.1f} |".format(r["step_ms"])
    s += f" learning rate: {r['lr']:.6E} |"
    s += f" global batch size: {global_batch_size:5d} |"
    for key, value in r.items():
        if (key == "loss" or key.startswith("loss/")) and value is not None:
            s += f" lm {key}: {value:.6E} |"
    s += f" loss scale: {r.get('loss_scale', 1.0):.1f} |"
    if r.get("grad_norm") is not None:
        s += f" grad norm: {r['grad_norm']:.3f} |"
    s += " number of skipped iterations: {:3d} |".format(r.get("skipped", 0))
    s += " number of nan iterations: {:3d} |".format(r.get("nan_iterations", 0))
    if r.get("stage") is not None:
        s += f" consumed tokens: {r['consumed_tokens']:14d} | stage: {r['stage']} |"
    return s


def val_lines(r: dict[str, Any]) -> list[str]:
    """Megatron's framed ` validation loss at iteration N | lm loss value: … | lm loss PPL: … |` block; each
    held-out set (eval.sets) as `heldout NAME loss: … | heldout NAME PPL: … |`, the stage last."""
    s = f" validation loss at iteration {r['step']} | "
    for key, value in r.items():
        if key == "val_loss" or key.startswith("val_loss/"):
            name = "lm loss" + key[len("val_loss"):]
            s += f"{name} value: {value:.6E} | {name} PPL: {math.exp(min(20.0, value)):.6E} | "
    for key, value in r.items():
        if key.startswith("nll/"):
            name = key[len("nll/"):]
            s += f"heldout {name} loss: {value:.6E} | heldout {name} PPL: {r[f'ppl/{name}']:.6E} | "
    if r.get("stage") is not None:
        s += f"stage: {r['stage']} | "
    bar = "-" * (len(s) + 1)
    return [bar, s, bar]


def event_line(r: dict[str, Any]) -> str:
    details = " | ".join(f"{k}: {v}" for k, v in r.items() if k not in ("event", "step", "time"))
    return f"{_stamp()} event {r['event']} at iteration {r.get('step')} | {details} |"


# ---- sinks -----------------------------------------------------------------------------------------------
class JsonlSink:
    """One JSON object per line in LOG_DIR/RUN.jsonl, flushed per record so a crash loses nothing logged."""

    def __init__(self, log_dir: Path, run_name: str):
        self.path = Path(log_dir) / f"{run_name}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        # NaN/inf are not JSON (jq, JavaScript and pandas' strict readers reject them): write null instead
        clean = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in record.items()}
        self._f.write(json.dumps(clean, ensure_ascii=False, allow_nan=False) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


class TensorboardSink:
    """Scalars to LOG_DIR/tensorboard/RUN (numbers only; the x axis is the step)."""

    def __init__(self, log_dir: Path, run_name: str):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise UserError("logging sink 'tensorboard' needs the tensorboard package: `pip install tensorboard` "
                            "(or drop it from logging.sinks)") from None
        self._w = SummaryWriter(log_dir=str(Path(log_dir) / "tensorboard" / run_name))

    def write(self, record: dict[str, Any]) -> None:
        step = record.get("step")
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self._w.add_scalar(key, value, step)
        self._w.flush()

    def close(self) -> None:
        self._w.close()


def register_builtin_loggers(register: Callable[..., None]) -> None:
    register("jsonl", JsonlSink)
    register("tensorboard", TensorboardSink)


class RunLog:
    """Fan-out for one run: metric sinks + the human LOG_DIR/RUN.log + stdout (through `echo`, e.g. tqdm.write
    so lines do not break the progress bar)."""

    def __init__(self, log_dir: str | Path, run_name: str, sinks: list[str],
                 echo: Callable[[str], None] | None = None, enabled: bool = True):
        from ..plugins import lookup

        self.enabled = enabled
        self.log_dir = Path(log_dir)
        self.jsonl_path = self.log_dir / f"{run_name}.jsonl"
        self.text_path = self.log_dir / f"{run_name}.log"
        self.echo = echo or (lambda line: print(line, file=sys.stdout, flush=True))
        self.sinks = [lookup("loggers", name)(self.log_dir, run_name) for name in sinks] if enabled else []
        self._text = None
        if enabled:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            self._text = open(self.text_path, "a", encoding="utf-8")

    def _emit(self, record: dict[str, Any], lines: list[str]) -> None:
        if not self.enabled:
            return
        for sink in self.sinks:
            sink.write(record)
        for line in lines:
            self._text.write(line + "\n")
            self.echo(line)
        self._text.flush()

    def train(self, record: dict[str, Any], **fmt: int) -> None:
        self._emit(record, [train_line(record, **fmt)])

    def validation(self, record: dict[str, Any]) -> None:
        self._emit(record, val_lines(record))

    def event(self, record: dict[str, Any]) -> None:
        record = {"step": record.get("step"), "event": record["event"], "time": datetime.now().isoformat(),
                  **{k: v for k, v in record.items() if k not in ("step", "event")}}
        self._emit(record, [event_line(record)])

    def note(self, line: str) -> None:
        """A human-only line (config summary, where checkpoints go)."""
        if self.enabled:
            self._text.write(line + "\n")
            self._text.flush()
            self.echo(line)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
        self.sinks = []
        if self._text is not None:
            self._text.close()
            self._text = None
