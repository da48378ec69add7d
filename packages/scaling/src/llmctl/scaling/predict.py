"""`llmctl scaling predict`: read the big run off `fit.json` — loss at (N, D), the compute-optimal (N, D) of a
budget, of a loss target, or of a hardware × time budget, with the bootstrap's 80% interval, and the benchmark
and optimal LR/batch where the fit has them.

Hardware: a GPU sustains roughly the same FLOP/s on models of neighbouring size, so a throughput X tokens/s
measured on a model of N_m parameters gives C = gpus × seconds × 6 N_m X. Without N_m, X is read as the rate of
the model to be trained, and the compute-optimal N solves N = N_opt(gpus × seconds × 6 N X).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from llmctl.core.errors import UserError

from .chinchilla import PARAMS, LawFit
from .isoflop import IsoFlopFit

FIT_VERSION = 1
LEVEL = 0.8


def load_fit(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / "fit.json"
    if not path.is_file():
        raise UserError(f"fit file not found: {path} (run `llmctl scaling fit` first)")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("llmctl_scaling_fit") != FIT_VERSION:
        raise UserError(f"{path}: not a fit.json written by `llmctl scaling fit`")
    return doc


def _law(doc: dict[str, Any]) -> LawFit:
    if not doc.get("approach3"):
        raise UserError("this fit has no approach-3 law L(N, D) (it was fitted with --method approach2): "
                        "loss predictions need `llmctl scaling fit --method approach3`")
    return LawFit.from_dict(doc["approach3"]["fit"])


def _samples(doc: dict[str, Any]) -> list[LawFit]:
    """The bootstrap's refitted laws (for intervals); empty when fitted with --bootstrap 0."""
    boot = (doc.get("approach3") or {}).get("bootstrap") or {}
    samples = boot.get("samples") or {}
    if not samples:
        return []
    base = _law(doc)
    n = len(samples[PARAMS[0]])
    return [LawFit(**{**base.to_dict(), **{p: float(samples[p][i]) for p in PARAMS}}) for i in range(n)]


def _over_samples(samples: list, fn) -> np.ndarray:
    """`fn(sample)` for every bootstrap sample; a resample with extreme exponents may overflow, and is dropped
    from the interval (non-finite) instead of warning."""
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        return np.array([float(fn(b)) for b in samples])


def _interval(values: np.ndarray) -> list[float] | None:
    values = values[np.isfinite(values)]
    if not len(values):
        return None
    lo, hi = np.quantile(values, [(1 - LEVEL) / 2, (1 + LEVEL) / 2])
    return [float(lo), float(hi)]


def loss_at(doc: dict[str, Any], n: float, d: float) -> dict[str, Any]:
    law = _law(doc)
    out = {"params": n, "tokens": d, "flops": 6 * n * d, "loss": float(law.loss(n, d))}
    boots = _samples(doc)
    if boots:
        samples = _over_samples(boots, lambda b: b.loss(n, d))
        out["loss_interval"] = _interval(samples)
        out["loss_samples"] = samples[np.isfinite(samples)]
    return out


def optimal(doc: dict[str, Any], c: float, *, intervals: bool = True) -> dict[str, Any]:
    """Compute-optimal N, D (and the loss there) for budget C: approach 3's closed form, or approach 2's power
    laws when the fit's method is approach2; `intervals` adds the bootstrap's (off for inner loops)."""
    if doc.get("method") == "approach2" or not doc.get("approach3"):
        if not doc.get("approach2"):
            raise UserError("this fit has neither an approach-3 law nor approach-2 power laws")
        n, d = IsoFlopFit.from_dict(doc["approach2"]).optimal(c)
        out = {"budget": c, "params": float(n), "tokens": float(d), "method": "approach2"}
        return out
    law = _law(doc)
    if not (law.alpha > 0 and law.beta > 0):
        raise UserError(f"this fit's exponents (alpha {law.alpha:.3g}, beta {law.beta:.3g}) leave no compute-optimal "
                        "split: an exponent on its bound 0 means the runs do not pin it (extend the grid)")
    n, d = law.optimal(c)
    out = {"budget": c, "params": float(n), "tokens": float(d), "loss": float(law.loss(n, d)),
           "method": "approach3"}
    boots = [b for b in _samples(doc) if b.alpha > 0 and b.beta > 0] if intervals else []  # on a bound: no optimum
    if boots:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            opts = [b.optimal(c) for b in boots]
        out["params_interval"] = _interval(np.array([float(o[0]) for o in opts]))
        out["tokens_interval"] = _interval(np.array([float(o[1]) for o in opts]))
        losses = _over_samples(list(zip(boots, opts)), lambda bo: bo[0].loss(*bo[1]))
        out["loss_interval"] = _interval(losses)
        out["loss_samples"] = losses[np.isfinite(losses)]
    return out


def budget_for_loss(doc: dict[str, Any], target: float) -> float:
    """The smallest budget whose compute-optimal run reaches `target` (bisection in log C: the frontier falls
    monotonically towards E)."""
    law = _law(doc)
    if target <= law.E:
        raise UserError(f"--target-loss {target} is at or below the fitted irreducible loss E = {law.E:.4f}")
    lo, hi = 1.0, 1e40
    if float(law.loss(*law.optimal(hi))) > target:
        raise UserError(f"--target-loss {target} needs more than 1e40 FLOPs under this fit")
    for _ in range(200):
        mid = math.sqrt(lo * hi)
        if float(law.loss(*law.optimal(mid))) > target:
            lo = mid
        else:
            hi = mid
    return hi


def hardware_budget(doc: dict[str, Any], gpus: int, days: float, tokens_per_s_per_gpu: float,
                    measured_params: float | None) -> float:
    """FLOPs the hardware delivers in `days` (module docstring for the two readings of the throughput)."""
    seconds = gpus * days * 86400.0
    if measured_params:
        return seconds * 6 * measured_params * tokens_per_s_per_gpu
    lo, hi = 1.0, 1e16  # N solving N = N_opt(seconds 6 N X): N_opt grows slower than C, so one crossing
    for _ in range(200):
        n = math.sqrt(lo * hi)
        n_opt = optimal(doc, seconds * 6 * n * tokens_per_s_per_gpu, intervals=False)["params"]
        lo, hi = (n, hi) if n_opt > n else (lo, n)
    return seconds * 6 * math.sqrt(lo * hi) * tokens_per_s_per_gpu


def benchmark_predictions(doc: dict[str, Any], loss_samples: np.ndarray | None, loss: float) -> dict[str, Any]:
    from .benchmark_fit import BenchmarkFit, predict_accuracy

    out = {}
    for name, fit_doc in (doc.get("benchmarks") or {}).items():
        fit = BenchmarkFit.from_dict(fit_doc)
        samples = loss_samples if loss_samples is not None and len(loss_samples) else np.array([loss])
        median, lo, hi = predict_accuracy(fit, samples)
        out[name] = {"accuracy": median, "interval": [lo, hi]}
    return out


def hparam_predictions(doc: dict[str, Any], c: float) -> dict[str, float]:
    from .hparams import PowerLaw

    return {key: float(PowerLaw.from_dict(h["law"])(c)) for key, h in (doc.get("hparams") or {}).items()}
