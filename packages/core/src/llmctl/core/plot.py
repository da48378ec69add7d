"""Training curves from llmctl JSONL logs and Megatron/MindSpeed text logs alike: reading them into series,
the throughput and summary table, and the figures (`llmctl plot` and `llmctl bench` draw with these; the
commands live in `llmctl.core.commands`).

Megatron's `training_log` line carries iteration, consumed samples, elapsed time per iteration (ms), learning
rate, global batch size and lm loss; tokens = consumed samples x seq length (from --seq-length or the
`seq_length ....... N` line of Megatron's argument dump). Throughput is the course lab's
TOKENS_PER_STEP / sec_per_step. A resumed run logs some steps twice; the later record wins. Torch-free.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import statistics
from pathlib import Path

from .errors import UserError
from .io import atomic_path


@dataclasses.dataclass
class Curve:
    name: str
    step: list[int] = dataclasses.field(default_factory=list)
    tokens: list[float] = dataclasses.field(default_factory=list)
    loss: list[float] = dataclasses.field(default_factory=list)
    lr: list[float] = dataclasses.field(default_factory=list)
    step_ms: list[float] = dataclasses.field(default_factory=list)
    tokens_per_s: list[float] = dataclasses.field(default_factory=list)
    val_step: list[int] = dataclasses.field(default_factory=list)
    val_tokens: list[float] = dataclasses.field(default_factory=list)
    val_loss: list[float] = dataclasses.field(default_factory=list)
    tokens_per_step: float | None = None


# ---- reading -----------------------------------------------------------------------------------------------
_ITER = re.compile(r"iteration\s+(\d+)\s*/\s*(\d+)")
_VAL = re.compile(r"validation loss at iteration\s+(\d+).*?lm loss value:\s*([-+0-9.eEnaNinf]+)")
_SEQ = re.compile(r"^\s*seq_length\s*\.{2,}\s*(\d+)\s*$", re.M)
_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|nan|inf"


def read_log(path: str | Path, seq_length: int | None = None) -> Curve:
    """Parse one log (JSONL or Megatron text, told apart by the first non-blank character)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"log not found: {path}")
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as e:
        raise UserError(f"{path}: cannot read ({e.strerror})") from None
    head = text.lstrip()[:1]
    train, val = _read_jsonl(path, text) if head == "{" else _read_megatron(path, text, seq_length)
    curve = Curve(name=path.stem)
    for rec in sorted(train.values(), key=lambda r: r["step"]):
        curve.step.append(rec["step"])
        curve.tokens.append(rec["tokens"])
        curve.loss.append(rec["loss"])
        curve.lr.append(rec["lr"])
        curve.step_ms.append(rec["step_ms"])
        curve.tokens_per_s.append(rec["tokens_per_s"])
        curve.tokens_per_step = rec.get("tokens_per_step", curve.tokens_per_step)
    for step, (tokens, loss) in sorted(val.items()):
        curve.val_step.append(step)
        curve.val_tokens.append(tokens)
        curve.val_loss.append(loss)
    if not curve.step:
        raise UserError(f"{path}: no training records found (expected llmctl JSONL or Megatron "
                        "'iteration N/M | ... | lm loss: X |' lines)")
    return curve


def _read_jsonl(path: Path, text: str) -> tuple[dict, dict]:
    train, val = {}, {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            raise UserError(f"{path}:{lineno}: not valid JSON") from None
        if not isinstance(rec, dict) or rec.get("event") or "step" not in rec:
            continue
        tokens = rec.get("consumed_tokens", rec.get("tokens"))
        if "val_loss" in rec:
            val[rec["step"]] = (tokens, rec["val_loss"])
        elif rec.get("loss") is not None:
            tps = rec.get("tokens_per_s")
            train[rec["step"]] = {"step": rec["step"], "tokens": tokens, "loss": rec["loss"], "lr": rec.get("lr"),
                                  "step_ms": rec.get("step_ms"), "tokens_per_s": tps,
                                  "tokens_per_step": tps * rec["step_ms"] / 1000 if tps and rec.get("step_ms")
                                  else None}
    return train, val


def _fields(line: str) -> dict[str, str]:
    """' consumed samples:   640 | lm loss: 5.1E+00 |' -> {'consumed samples': '640', 'lm loss': '5.1E+00'}"""
    out = {}
    for part in line.split("|"):
        key, sep, value = part.partition(": ")
        if sep:
            out[key.strip()] = value.strip()
    return out


def _read_megatron(path: Path, text: str, seq_length: int | None) -> tuple[dict, dict]:
    if seq_length is None:
        m = _SEQ.search(text)
        seq_length = int(m.group(1)) if m else None
    train, val = {}, {}
    for lineno, line in enumerate(text.splitlines(), 1):
        v = _VAL.search(line)
        if v:
            val[int(v.group(1))] = (None, float(v.group(2)))
            continue
        it = _ITER.search(line)
        if not it or "elapsed time per iteration (ms)" not in line:
            continue
        f = _fields(line)
        try:
            step = int(it.group(1))
            samples = int(f["consumed samples"])
            ms = float(f["elapsed time per iteration (ms)"])
            lr = float(f["learning rate"]) if "learning rate" in f else None
            gbs = int(f["global batch size"])
            loss = float(f["lm loss"]) if "lm loss" in f else None
        except (KeyError, ValueError) as e:
            raise UserError(f"{path}:{lineno}: cannot read Megatron field {e}") from None
        if seq_length is None:
            raise UserError(f"{path}: the log does not state the sequence length; pass --seq-length "
                            "(tokens = consumed samples x seq length)")
        if loss is None:
            continue  # Megatron omits lm loss on a fully skipped interval
        tokens_per_step = gbs * seq_length
        train[step] = {"step": step, "tokens": samples * seq_length, "loss": loss, "lr": lr, "step_ms": ms,
                       "tokens_per_s": tokens_per_step / (ms / 1000.0) if ms > 0 else None,
                       "tokens_per_step": tokens_per_step}
    by_step = {s: r["tokens"] for s, r in train.items()}
    for step, (_, loss) in list(val.items()):
        known = [s for s in by_step if s <= step]
        val[step] = (by_step[max(known)] if known else None, loss)
    return train, val


# ---- math --------------------------------------------------------------------------------------------------
def smooth(values: list[float], window: int) -> list[float]:
    """Trailing moving average (the first points average what exists so far)."""
    out, total, buf = [], 0.0, []
    for v in values:
        buf.append(v)
        total += v
        if len(buf) > max(1, window):
            total -= buf.pop(0)
        out.append(total / len(buf))
    return out


def throughput(curve: Curve, skip_first: int = 1) -> tuple[float | None, float | None]:
    """(median ms per step, tokens/s = TOKENS_PER_STEP / median sec_per_step); the first logged interval is
    dropped when there are others (it carries start-up and compilation)."""
    ms = [m for m in curve.step_ms if m]
    if len(ms) > skip_first:
        ms = ms[skip_first:]
    if not ms:
        return None, None
    med = statistics.median(ms)
    return med, (curve.tokens_per_step / (med / 1000.0)) if curve.tokens_per_step else None


# ---- drawing -----------------------------------------------------------------------------------------------
def pyplot():
    try:
        import matplotlib
    except ImportError:
        raise UserError("plots need matplotlib: `pip install 'llmctl-core[plot]'`") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, output: Path) -> Path:
    fmt = output.suffix.lstrip(".").lower() or "png"
    with atomic_path(output) as tmp:
        fig.savefig(tmp, format=fmt, dpi=120, bbox_inches="tight")
    return output


def plot_curves(curves: list[Curve], output: Path, *, smooth_window: int = 1, title: str | None = None) -> Path:
    plt = pyplot()
    fig, (ax_loss, ax_lr, ax_tps) = plt.subplots(1, 3, figsize=(17, 4.8))
    for c in curves:
        line, = ax_loss.plot(c.tokens, smooth(c.loss, smooth_window), label=f"{c.name} train", lw=1.2)
        if c.val_loss:
            ax_loss.plot(c.val_tokens, c.val_loss, "o--", color=line.get_color(), ms=4, label=f"{c.name} val")
        if any(v is not None for v in c.lr):
            ax_lr.plot(c.tokens, c.lr, label=c.name, color=line.get_color())
        if any(v for v in c.tokens_per_s):
            ax_tps.plot(c.tokens, smooth([v or 0.0 for v in c.tokens_per_s], smooth_window), label=c.name,
                        color=line.get_color())
    for ax, ylabel in ((ax_loss, "lm loss"), (ax_lr, "learning rate"), (ax_tps, "tokens/s")):
        ax.set_xlabel("tokens")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    try:
        return save_figure(fig, output)
    finally:
        plt.close(fig)


def plot_exp_loss(curves: list[Curve], output: Path, *, token_threshold: float, smooth_window: int = 1,
                  title: str | None = None) -> Path:
    """exp(loss) after `token_threshold` tokens: late-training differences a loss plot flattens."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    for c in curves:
        smoothed = smooth(c.loss, smooth_window)
        pts = [(t, math.exp(min(20.0, s))) for t, s in zip(c.tokens, smoothed) if t >= token_threshold]
        if not pts:
            raise UserError(f"{c.name}: no steps after {token_threshold:g} tokens (the log ends at "
                            f"{c.tokens[-1]:g}); lower --token-threshold")
        ax.plot(*zip(*pts), label=c.name)
    ax.set_xlabel("tokens")
    ax.set_ylabel("exp(lm loss)")
    ax.set_title(title or f"exp(loss) after {token_threshold:g} tokens")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    try:
        return save_figure(fig, output)
    finally:
        plt.close(fig)


# ---- the summary table -------------------------------------------------------------------------------------
def summary_table(paths, seq_length: int | None = None) -> str:
    """Per log: steps, tokens, median elapsed ms per step, tokens/s (TOKENS_PER_STEP / sec_per_step), the last
    train and validation losses, as aligned text lines."""
    rows = [("log", "steps", "tokens", "ms/step", "tokens/s", "train loss", "val loss")]
    for p in paths:
        c = read_log(p, seq_length)
        ms, tps = throughput(c)
        rows.append((c.name, str(c.step[-1]), f"{c.tokens[-1]:.4g}" if c.tokens[-1] is not None else "-",
                     f"{ms:.1f}" if ms else "-", f"{tps:,.0f}" if tps else "-", f"{c.loss[-1]:.4f}",
                     f"{c.val_loss[-1]:.4f}" if c.val_loss else "-"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths)))
                     for r in rows) + "\n"
