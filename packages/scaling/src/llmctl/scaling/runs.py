"""What `fit` reads: a sweep dir (its runs.jsonl) or any CSV/JSONL table with `params`, `tokens`, `loss`.

Published data (Hoffmann et al.'s, Besiroglu et al.'s CSV) and llmctl's own runs go through the same columns:
`params`, `tokens`, `loss` (required), `flops` (default 6 N D), `budget` (the planned isoFLOP budget, which
groups the profiles; default: FLOPs agreeing within 5%), `lr`, `global_batch_size` (or `batch`), and one column
per benchmark (runs.jsonl keeps them under `eval`). A sweep's failed rows are left out and counted; a bad value
is one line naming the file and row.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from llmctl.core.errors import UserError

from .sweep import RUNS_FILE

REQUIRED = ("params", "tokens", "loss")
LOSS_KEYS = ("val", "train")


@dataclasses.dataclass
class Runs:
    source: str
    names: list[str]
    params: np.ndarray
    tokens: np.ndarray
    loss: np.ndarray
    flops: np.ndarray
    budget: np.ndarray | None  # planned budgets (groups the isoFLOP profiles); None: group by FLOPs
    lr: np.ndarray | None
    batch: np.ndarray | None
    benchmarks: dict[str, np.ndarray]  # name -> accuracy per run (nan where the run has none)
    skipped: int  # failed rows of a sweep

    def __len__(self) -> int:
        return len(self.names)

    def select(self, indices: np.ndarray) -> "Runs":
        """These runs only (e.g. `best_per_shape`'s), every column cut alike."""
        def cut(col):
            return None if col is None else col[indices]

        return dataclasses.replace(
            self, names=[self.names[i] for i in indices], params=self.params[indices], tokens=self.tokens[indices],
            loss=self.loss[indices], flops=self.flops[indices], budget=cut(self.budget), lr=cut(self.lr),
            batch=cut(self.batch), benchmarks={k: v[indices] for k, v in self.benchmarks.items()})

    def groups(self) -> np.ndarray:
        """The isoFLOP profile of each run: its planned budget, else its FLOPs."""
        return self.budget if self.budget is not None else self.flops

    def table(self) -> list[dict[str, Any]]:
        """The data used, as rows (kept in fit.json)."""
        rows = []
        for i, name in enumerate(self.names):
            row = {"name": name, "params": float(self.params[i]), "tokens": float(self.tokens[i]),
                   "loss": float(self.loss[i]), "flops": float(self.flops[i])}
            for key in ("budget", "lr", "batch"):
                col = getattr(self, key)
                if col is not None and math.isfinite(col[i]):
                    row[key] = float(col[i])
            row.update({b: float(v[i]) for b, v in self.benchmarks.items() if math.isfinite(v[i])})
            rows.append(row)
        return rows


def _rows(path: Path, loss: str) -> tuple[list[dict[str, Any]], int, str]:
    if path.is_dir():
        path = path / RUNS_FILE
        if not path.is_file():
            raise UserError(f"{path.parent}: no {RUNS_FILE} (run `llmctl scaling run` first, or pass a CSV/JSONL)")
    if not path.is_file():
        raise UserError(f"runs file not found: {path}")
    if path.suffix == ".csv":
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows = [dict(r) for r in reader]
            columns = reader.fieldnames or []
        missing = [c for c in REQUIRED if c not in columns]
        if missing:
            raise UserError(f"{path}: no '{missing[0]}' column (columns: {', '.join(columns) or 'none'})")
        return rows, 0, str(path)
    rows, skipped = [], 0
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as e:
            raise UserError(f"{path} line {i}: not JSON ({e})") from None
        if not isinstance(row, dict):
            raise UserError(f"{path} line {i}: not a JSON object")
        if "status" in row:  # a sweep's row: losses under val_loss / train_loss, benchmarks under eval
            if row["status"] != "ok":
                skipped += 1
                continue
            key = f"{loss}_loss"
            if row.get(key) is None:
                raise UserError(f"{path} line {i} ({row.get('name')}): no {key} (validation needs eval.iters > 0; "
                                "or fit --loss train)")
            row = {**row, "loss": row[key], **(row.get("eval") or {})}
        for c in REQUIRED:
            if c not in row:
                raise UserError(f"{path} line {i}: no '{c}' key")
        row["_line"] = i
        rows.append(row)
    return rows, skipped, str(path)


def _number(row: dict[str, Any], key: str, where: str, positive: bool = True) -> float:
    value = row.get(key)
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{where}: {key} {value!r} is not a number") from None
    if not math.isfinite(x) or (positive and x <= 0):
        raise UserError(f"{where}: {key} must be a positive finite number, got {value}")
    return x


def read_runs(source: str | Path, *, loss: str = "val", benchmarks: tuple[str, ...] = ()) -> Runs:
    if loss not in LOSS_KEYS:
        raise UserError(f"--loss must be one of {', '.join(LOSS_KEYS)}, got {loss}")
    rows, skipped, where = _rows(Path(source), loss)
    if not rows:
        raise UserError(f"{where}: no usable runs" + (f" ({skipped} failed)" if skipped else ""))
    names, cols = [], {k: [] for k in ("params", "tokens", "loss", "flops", "budget", "lr", "batch")}
    bench = {b: [] for b in benchmarks}
    for i, row in enumerate(rows):
        at = f"{where} line {row.get('_line', i + 2)}"
        n, d, l_ = (_number(row, k, at) for k in REQUIRED)
        cols["params"].append(n)
        cols["tokens"].append(d)
        cols["loss"].append(l_)
        cols["flops"].append(_number(row, "flops", at) if row.get("flops") not in (None, "") else 6 * n * d)
        for key, names_ in (("budget", ("budget",)), ("lr", ("lr",)), ("batch", ("global_batch_size", "batch"))):
            given = next((k for k in names_ if row.get(k) not in (None, "")), None)
            cols[key].append(math.nan if given is None else _number(row, given, at))
        for b in benchmarks:
            value = row.get(b)
            bench[b].append(math.nan if value in (None, "") else _number(row, b, at, positive=False))
        names.append(str(row.get("name", f"row{i + 1}")))

    def optional(key: str) -> np.ndarray | None:
        col = np.array(cols[key], dtype=float)
        return col if np.isfinite(col).all() else None

    for b, values in bench.items():
        if not np.isfinite(values).any():
            raise UserError(f"{where}: no run has a '{b}' result (set `eval:` in the grid, or add a '{b}' column)")
    return Runs(source=where, names=names, params=np.array(cols["params"]), tokens=np.array(cols["tokens"]),
                loss=np.array(cols["loss"]), flops=np.array(cols["flops"]), budget=optional("budget"),
                lr=optional("lr"), batch=optional("batch"),
                benchmarks={b: np.array(v, dtype=float) for b, v in bench.items()}, skipped=skipped)


def best_per_shape(runs: Runs) -> np.ndarray:
    """Indices of the lowest-loss run of each (N, D): an LR/batch sweep's other points do not belong to the law."""
    best: dict[tuple[float, float], int] = {}
    for i, key in enumerate(zip(runs.params.tolist(), runs.tokens.tolist())):
        if key not in best or runs.loss[i] < runs.loss[best[key]]:
            best[key] = i
    return np.array(sorted(best.values()), dtype=int)
