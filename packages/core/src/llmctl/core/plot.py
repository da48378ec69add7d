"""Training curves from llmctl JSONL logs and Megatron/MindSpeed text logs alike: reading them into series,
the throughput and summary table, and the figures (`llmctl plot` and `llmctl bench` draw with these; the
commands live in `llmctl.core.commands`).

Megatron's `training_log` line carries iteration, consumed samples, elapsed time per iteration (ms), learning
rate, global batch size and lm loss; tokens = consumed samples x seq length (from --seq-length or the
`seq_length ....... N` line of Megatron's argument dump). Throughput is the course lab's
TOKENS_PER_STEP / sec_per_step. A resumed run logs some steps twice; the later record wins. A run in stages
logs its stage on every line (and consumed tokens, since the sequence length changes): `plot curves` draws
the stage boundaries and each stage's LR, and the held-out sets' perplexity (eval.sets) in a panel of its
own. Torch-free.
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
    stage: list[str | None] = dataclasses.field(default_factory=list)  # per training point (None: no stages)
    sets: dict[str, tuple[list[float], list[float]]] = dataclasses.field(default_factory=dict)  # name -> (tokens, ppl)

    def stage_spans(self) -> list[tuple[str, int, int]]:
        """(stage, first point, end point) of each run of consecutive training points in one stage."""
        spans: list[tuple[str, int, int]] = []
        for i, name in enumerate(self.stage):
            if name is None:
                continue
            if spans and spans[-1][0] == name and spans[-1][2] == i:
                spans[-1] = (name, spans[-1][1], i + 1)
            else:
                spans.append((name, i, i + 1))
        return spans

    def stage_boundaries(self) -> list[tuple[float, str]]:
        """(tokens where a stage ends, the next stage's name): the last point of each stage but the last."""
        spans = self.stage_spans()
        return [(self.tokens[end - 1], nxt[0]) for (_, _, end), nxt in zip(spans, spans[1:])]


# ---- reading -----------------------------------------------------------------------------------------------
_ITER = re.compile(r"iteration\s+(\d+)\s*/\s*(\d+)")
_VAL = re.compile(r"validation loss at iteration\s+(\d+).*?lm loss value:\s*([-+0-9.eEnaNinf]+)")
_SEQ = re.compile(r"^\s*seq_length\s*\.{2,}\s*(\d+)\s*$", re.M)
_HELDOUT = re.compile(r"heldout (\S+) PPL:\s*([-+0-9.eEnaNinf]+)")
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
    train, val, sets = _read_jsonl(path, text) if head == "{" else _read_megatron(path, text, seq_length)
    curve = Curve(name=path.stem)
    for rec in sorted(train.values(), key=lambda r: r["step"]):
        curve.step.append(rec["step"])
        curve.tokens.append(rec["tokens"])
        curve.loss.append(rec["loss"])
        curve.lr.append(rec["lr"])
        curve.step_ms.append(rec["step_ms"])
        curve.tokens_per_s.append(rec["tokens_per_s"])
        curve.stage.append(rec.get("stage"))
        curve.tokens_per_step = rec.get("tokens_per_step", curve.tokens_per_step)
    for step, (tokens, loss) in sorted(val.items()):
        curve.val_step.append(step)
        curve.val_tokens.append(tokens)
        curve.val_loss.append(loss)
    for name, points in sets.items():
        ordered = sorted(points.items())
        curve.sets[name] = ([t for _, (t, _) in ordered], [v for _, (_, v) in ordered])
    if not curve.step:
        raise UserError(f"{path}: no training records found (expected llmctl JSONL or Megatron "
                        "'iteration N/M | ... | lm loss: X |' lines)")
    return curve


def _read_jsonl(path: Path, text: str) -> tuple[dict, dict, dict]:
    train, val, sets = {}, {}, {}
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
        for key, value in rec.items():
            if key.startswith("ppl/") and value is not None:
                sets.setdefault(key[len("ppl/"):], {})[rec["step"]] = (tokens, value)
        if "val_loss" in rec:
            val[rec["step"]] = (tokens, rec["val_loss"])
        elif rec.get("loss") is not None:
            tps = rec.get("tokens_per_s")
            train[rec["step"]] = {"step": rec["step"], "tokens": tokens, "loss": rec["loss"], "lr": rec.get("lr"),
                                  "step_ms": rec.get("step_ms"), "tokens_per_s": tps, "stage": rec.get("stage"),
                                  "tokens_per_step": tps * rec["step_ms"] / 1000 if tps and rec.get("step_ms")
                                  else None}
    return train, val, sets


def _fields(line: str) -> dict[str, str]:
    """' consumed samples:   640 | lm loss: 5.1E+00 |' -> {'consumed samples': '640', 'lm loss': '5.1E+00'}"""
    out = {}
    for part in line.split("|"):
        key, sep, value = part.partition(": ")
        if sep:
            out[key.strip()] = value.strip()
    return out


def _read_megatron(path: Path, text: str, seq_length: int | None) -> tuple[dict, dict, dict]:
    if seq_length is None:
        m = _SEQ.search(text)
        seq_length = int(m.group(1)) if m else None
    train, val, sets = {}, {}, {}
    for lineno, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("validation loss at iteration"):
            step = int(line.split("iteration", 1)[1].split("|", 1)[0])
            for name, value in _HELDOUT.findall(line):
                sets.setdefault(name, {})[step] = (None, float(value))
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
        if "consumed tokens" in f:  # a run in stages: its sequence length changes
            tokens, seq = int(f["consumed tokens"]), None
        elif seq_length is None:
            raise UserError(f"{path}: the log does not state the sequence length; pass --seq-length "
                            "(tokens = consumed samples x seq length)")
        else:
            tokens, seq = samples * seq_length, seq_length
        if loss is None:
            continue  # Megatron omits lm loss on a fully skipped interval
        previous = train.get(max((s for s in train if s < step), default=-1))
        if seq is None and previous is not None and samples > previous["samples"]:
            seq = (tokens - previous["tokens"]) / (samples - previous["samples"])
        tokens_per_step = gbs * seq if seq else None
        train[step] = {"step": step, "tokens": tokens, "loss": loss, "lr": lr, "step_ms": ms, "samples": samples,
                       "tokens_per_s": tokens_per_step / (ms / 1000.0) if ms > 0 and tokens_per_step else None,
                       "tokens_per_step": tokens_per_step, "stage": f.get("stage")}
    by_step = {s: r["tokens"] for s, r in train.items()}
    for step, (_, loss) in list(val.items()):
        known = [s for s in by_step if s <= step]
        val[step] = (by_step[max(known)] if known else None, loss)
    for points in sets.values():
        for step, (_, value) in list(points.items()):
            known = [s for s in by_step if s <= step]
            points[step] = (by_step[max(known)] if known else None, value)
    return train, val, sets


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
    """Loss (train + validation), learning rate and throughput against tokens; a run in stages gets its stage
    boundaries on every panel and its LR drawn stage by stage; held-out sets (eval.sets) a perplexity panel."""
    plt = pyplot()
    with_sets = any(c.sets for c in curves)
    fig, axes = plt.subplots(1, 4 if with_sets else 3, figsize=(22 if with_sets else 17, 4.8))
    ax_loss, ax_lr, ax_tps = axes[:3]
    for c in curves:
        line, = ax_loss.plot(c.tokens, smooth(c.loss, smooth_window), label=f"{c.name} train", lw=1.2)
        color = line.get_color()
        if c.val_loss:
            ax_loss.plot(c.val_tokens, c.val_loss, "o--", color=color, ms=4, label=f"{c.name} val")
        spans = c.stage_spans()
        if spans and any(v is not None for v in c.lr):
            styles = ["-", "--", "-.", ":"]
            for k, (stage, a, b) in enumerate(spans):  # each stage's LR segment, named
                first = all(s[0] != stage for s in spans[:k])
                ax_lr.plot(c.tokens[a:b], c.lr[a:b], styles[k % len(styles)], color=color,
                           label=f"{c.name} {stage}" if first else None)
        elif any(v is not None for v in c.lr):
            ax_lr.plot(c.tokens, c.lr, label=c.name, color=color)
        if any(v for v in c.tokens_per_s):
            ax_tps.plot(c.tokens, smooth([v or 0.0 for v in c.tokens_per_s], smooth_window), label=c.name,
                        color=color)
        for name, (tokens, ppl) in c.sets.items():
            axes[3].plot(tokens, ppl, "o-", ms=3, label=f"{c.name} {name}")
        for tokens, stage in c.stage_boundaries():
            for ax in axes:
                ax.axvline(tokens, color=color, ls=":", lw=0.8, alpha=0.7)
            ax_loss.annotate(stage, (tokens, 1.0), xycoords=("data", "axes fraction"), rotation=90, va="top",
                             ha="right", fontsize=7, color=color)
    labels = [(ax_loss, "lm loss"), (ax_lr, "learning rate"), (ax_tps, "tokens/s")]
    if with_sets:
        labels.append((axes[3], "held-out perplexity"))
    for ax, ylabel in labels:
        ax.set_xlabel("tokens")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if with_sets:
        axes[3].set_yscale("log")
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
