"""`llmctl scaling plan`: an isoFLOP grid of proportional shapes around the compute-optimal size of each budget.

For a budget C the profile is centred on the size Chinchilla's rule of thumb expects, N* = sqrt(C / (6 r)) with
r tokens per parameter (20 in Hoffmann et al.; toy CPU budgets need far fewer), and its `points` sizes are spread
log-evenly over a factor `span` around it, each snapped to the nearest proportional shape (shapes.py). Each
point trains D = C / flops_per_token tokens, rounded to whole iterations of the base config's global batch.
`--lr-sweep` / `--batch-sweep` repeat every point at multiples of the base's LR / global batch, so `fit` can
read the optimal LR and batch as power laws in C (DeepSeek LLM, 2024).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Sequence

from llmctl.core.errors import UserError

from .shapes import SHAPE_KEYS, count_params, flops_per_token, proportional_shapes, shape_name


@dataclasses.dataclass
class PlanOptions:
    budgets: Sequence[float]
    points: int = 5
    tokens_per_param: float = 20.0
    span: float = 16.0  # largest / smallest N in one isoFLOP profile (wider profiles pin the law better)
    params: str = "non-embedding"
    flops: str = "6nd"
    tp: int = 1
    lr_sweep: Sequence[float] = ()  # multipliers of the base LR
    batch_sweep: Sequence[float] = ()  # multipliers of the base global batch
    min_iters: int = 10

    def validate(self) -> None:
        if not self.budgets or any(not (c > 0 and math.isfinite(c)) for c in self.budgets):
            raise UserError(f"--budgets must be positive FLOP counts, got {list(self.budgets)}")
        if self.points < 3:
            raise UserError(f"--points must be >= 3 (a parabola per isoFLOP profile needs three), got {self.points}")
        if self.tokens_per_param <= 0 or self.span <= 1:
            raise UserError("--tokens-per-param must be > 0 and --span > 1")
        if any(m <= 0 for m in (*self.lr_sweep, *self.batch_sweep)):
            raise UserError("--lr-sweep and --batch-sweep multipliers must be > 0")


def budget_tag(c: float) -> str:
    """1e15 -> '1e15', 3e15 -> '3e15', 2.5e10 -> '2.5e10' (for point names)."""
    mantissa, exponent = f"{c:.3e}".split("e")
    return f"{float(mantissa):g}e{int(exponent)}"


def plan(base_source: str, base_sets: Sequence[str], opts: PlanOptions) -> dict[str, Any]:
    """The grid (grid.py's layout) for `opts`; raises UserError when a budget cannot hold enough shapes."""
    from llmctl.core.train.config import load_train_config

    opts.validate()
    base = load_train_config(base_source, list(base_sets))
    seq, gbs = base.data.seq_length, base.global_batch_size
    shapes = proportional_shapes(base.model, tp=opts.tp)
    points = []
    for budget in sorted(opts.budgets):
        chosen = _profile(shapes, budget, opts, seq, gbs)
        for model in chosen:
            fpt = flops_per_token(model, opts.params, opts.flops, seq, opts.tp)
            for lr_mult in opts.lr_sweep or (1.0,):
                for batch_mult in opts.batch_sweep or (1.0,):
                    batch = max(base.train.micro_batch_size,
                                round(gbs * batch_mult / base.train.micro_batch_size) * base.train.micro_batch_size)
                    iters = max(1, round(budget / fpt / (batch * seq)))
                    name = f"C{budget_tag(budget)}-{shape_name(model)}"
                    train: dict[str, Any] = {"train_iters": iters}
                    if opts.lr_sweep:
                        train["lr"] = float(f"{base.train.lr * lr_mult:.4g}")
                        train["min_lr"] = min(base.train.min_lr, train["lr"])
                        name += f"-lr{train['lr']:g}"
                    if opts.batch_sweep:
                        train["global_batch_size"] = batch
                        name += f"-b{batch}"
                    if base.train.train_tokens is not None:
                        train["train_tokens"] = None
                    if base.train.tokens_per_step is not None and opts.batch_sweep:
                        train["tokens_per_step"] = None
                    tokens = iters * batch * seq
                    points.append({
                        "name": name, "budget": float(budget),
                        "model": {k: getattr(model, k) for k in SHAPE_KEYS},
                        "train": train,
                        "params": count_params(model, opts.params, opts.tp),
                        "params_total": count_params(model, "total", opts.tp),
                        "tokens": tokens, "flops": float(f"{fpt * tokens:.6g}"),
                    })
    grid: dict[str, Any] = {"base": str(base_source), "set": list(base_sets), "params": opts.params,
                            "flops": opts.flops}
    if opts.tp > 1:
        grid["tp"] = opts.tp
    grid["points"] = points
    return grid


def _profile(shapes, budget: float, opts: PlanOptions, seq: int, gbs: int) -> list:
    """`opts.points` distinct shapes spread over `span` around N*, each able to run >= min_iters iterations."""
    fits = [s for s in shapes
            if budget / flops_per_token(s, opts.params, opts.flops, seq, opts.tp) / (gbs * seq) >= opts.min_iters]
    if not fits:
        raise UserError(f"budget {budget:g} FLOPs is too small for {opts.min_iters} iterations of even the "
                        f"smallest shape at global batch {gbs} x seq {seq}")
    center = math.sqrt(budget / (6 * opts.tokens_per_param))
    logs = [math.log(count_params(s, opts.params, opts.tp)) for s in fits]
    chosen: list[int] = []
    for i in range(opts.points):
        target = math.log(center) + math.log(opts.span) * (i / (opts.points - 1) - 0.5)
        free = [j for j in range(len(fits)) if j not in chosen]
        if not free:
            break
        chosen.append(min(free, key=lambda j: abs(logs[j] - target)))
    if len(chosen) < opts.points:
        raise UserError(f"budget {budget:g}: only {len(chosen)} shapes fit (>= {opts.min_iters} iterations each), "
                        f"--points asks for {opts.points}; raise the budget or lower --points")
    return [fits[j] for j in sorted(chosen, key=lambda j: logs[j])]


def table(points) -> str:
    """The plan as a fixed-width table: the `--print` output."""
    head = f"{'name':<28} {'budget':>9} {'N':>10} {'N total':>10} {'layers':>6} {'hidden':>6} {'heads':>5} " \
           f"{'kv':>3} {'ffn':>6} {'D':>10} {'D/N':>7} {'iters':>7} {'lr':>8} {'GBS':>5}"
    lines = [head, "-" * len(head)]
    for p in points:
        m = p.config["model"]
        lines.append(
            f"{p.name:<28} {p.budget or 0:>9.3g} {p.params:>10.4g} {p.params_total:>10.4g} {m['num_layers']:>6} "
            f"{m['hidden_size']:>6} {m['num_heads']:>5} {m['num_kv_heads'] or m['num_heads']:>3} "
            f"{m['ffn_hidden_size']:>6} {p.tokens:>10.4g} {p.tokens / p.params:>7.2f} "
            f"{p.iters:>7} {p.lr:>8.3g} {p.global_batch_size:>5}")
    return "\n".join(lines)
