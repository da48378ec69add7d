"""Turn per-question records into accuracies, and write them where people and tools look:
`OUT/results.json` (machine-readable, with model and data hashes so two runs can be told apart),
`OUT/logs/eval_<ts>/<task>.log` (the course lab's readable table), `OUT/predictions/<task>.jsonl` (every
question, for error analysis). `compare_text` diffs two results.json files. Torch-free.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.metadata
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

from llmctl.core import __version__ as core_version
from llmctl.core.errors import UserError
from llmctl.core.io import atomic_file, write_json_atomic, write_text_atomic

from .api import TaskResult

if TYPE_CHECKING:
    from llmctl.core.nn.loading import LoadedModel

RESULTS_FILE = "results.json"


# ---- accuracy ----------------------------------------------------------------------------------------------
def _acc(correct: int, total: int) -> float | None:
    return correct / total if total else None


def _mean(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def accuracy_result(task: str, records: list[dict[str, Any]],
                    categories_of: Callable[[str], Iterable[str]] = lambda s: (),
                    data_files: Iterable[str] = (), info: dict[str, Any] | None = None,
                    category_order: Sequence[str] = ()) -> TaskResult:
    """Aggregate records {subject, answer (None = unlabeled), pred (None = no answer found), ...}.

    acc is micro (all questions pooled, hendrycks/test's "Average accuracy"); macro_acc is the mean of the
    subjects' accuracies (CMMLU's and C-Eval's official average). Same two for each category; categories are
    listed in `category_order`, then any others alphabetically."""
    subjects: dict[str, dict[str, Any]] = {}
    for r in records:
        s = subjects.setdefault(r["subject"], {"correct": 0, "total": 0, "unlabeled": 0, "no_answer": 0})
        if r.get("pred") is None:
            s["no_answer"] += 1
        if r.get("answer") is None:
            s["unlabeled"] += 1
            continue
        s["total"] += 1
        s["correct"] += int(r.get("pred") == r["answer"])
    for s in subjects.values():
        s["acc"] = _acc(s["correct"], s["total"])
    categories: dict[str, dict[str, Any]] = {}
    for name, s in subjects.items():
        for cat in categories_of(name):
            c = categories.setdefault(cat, {"correct": 0, "total": 0, "subjects": []})
            c["correct"] += s["correct"]
            c["total"] += s["total"]
            c["subjects"].append(name)
    for c in categories.values():
        c["acc"] = _acc(c["correct"], c["total"])
        c["macro_acc"] = _mean(subjects[n]["acc"] for n in c["subjects"])
    correct = sum(s["correct"] for s in subjects.values())
    total = sum(s["total"] for s in subjects.values())
    metrics = {"acc": _acc(correct, total), "macro_acc": _mean(s["acc"] for s in subjects.values()),
               "correct": correct, "total": total, "subjects": len(subjects),
               "unlabeled": sum(s["unlabeled"] for s in subjects.values()),
               "no_answer": sum(s["no_answer"] for s in subjects.values())}
    rank = {c: i for i, c in enumerate(category_order)}
    ordered = dict(sorted(categories.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])))
    return TaskResult(task, metrics, subjects, ordered, records, list(data_files), dict(info or {}))


# ---- hashes ------------------------------------------------------------------------------------------------
def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def files_sha256(paths: Iterable[str | Path]) -> str | None:
    """One hash over the files' names and contents, independent of where the data directory lives."""
    paths = sorted({Path(p).resolve() for p in paths})
    if not paths:
        return None
    h = hashlib.sha256()
    for p in paths:
        h.update(f"{p.parent.name}/{p.name}\0{file_sha256(p)}\n".encode())
    return h.hexdigest()


def weight_files(loaded: "LoadedModel", iteration: int | None = None) -> list[Path]:
    """The files holding the model's weights: an HF dir's safetensors/bin, a native checkpoint's rank files."""
    path = Path(loaded.path)
    if loaded.source == "hf":
        return sorted(path.glob("*.safetensors")) or sorted(path.glob("pytorch_model*.bin"))
    from llmctl.core.nn.checkpoint import STATE_FILE, resolve_iteration_dir

    return sorted(resolve_iteration_dir(path, iteration).glob(f"mp_rank_*/{STATE_FILE}"))


def _eval_version() -> str:
    try:
        return importlib.metadata.version("llmctl-eval")
    except importlib.metadata.PackageNotFoundError:
        return "?"


# ---- writing -----------------------------------------------------------------------------------------------
def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def task_table(result: TaskResult, header: str = "") -> str:
    """Readable per-subject / per-category / overall table (logs/eval_<ts>/<task>.log)."""
    lines = [header] if header else []
    if result.subjects:
        lines.append(f"{'subject':<44} {'correct':>8} {'total':>6} {'acc':>8}")
        for name, s in result.subjects.items():
            lines.append(f"{name:<44} {_fmt(s.get('correct')):>8} {_fmt(s.get('total')):>6} {_fmt(s.get('acc')):>8}")
    if result.categories:
        lines += ["", f"{'category':<30} {'subjects':>8} {'correct':>8} {'total':>6} {'acc':>8} {'macro_acc':>9}"]
        for name, c in result.categories.items():
            lines.append(f"{name:<30} {len(c['subjects']):>8} {c['correct']:>8} {c['total']:>6} "
                         f"{_fmt(c['acc']):>8} {_fmt(c['macro_acc']):>9}")
    lines.append("")
    lines.append("overall: " + "  ".join(f"{k}={_fmt(v)}" for k, v in result.metrics.items()))
    for key, value in result.info.items():
        if key.startswith("skipped") and value:
            lines.append(f"{key}: {value}")
    return "\n".join(lines) + "\n"


def write_results(out_dir: str | Path, results: list[TaskResult], *, loaded: "LoadedModel",
                  settings: dict[str, Any], started: _dt.datetime, iteration: int | None = None) -> Path:
    """results.json + logs/eval_<ts>/<task>.log + predictions/<task>.jsonl, each written atomically."""
    out_dir = Path(out_dir)
    stamp = started.strftime("%Y%m%d_%H%M%S")
    files = weight_files(loaded, iteration)
    if loaded.source == "native" and files:  # record which iteration the pointer named
        iteration = int(files[0].parent.parent.name.removeprefix("iter_"))
    model = {"path": str(loaded.path), "source": loaded.source, "iteration": iteration,
             "weights_sha256": files_sha256(files),
             "num_params": sum(p.numel() for p in loaded.model.parameters())}
    doc = {"llmctl_version": core_version, "llmctl_eval_version": _eval_version(),
           "timestamp": started.isoformat(timespec="seconds"),
           "model": model, "settings": settings, "tasks": {}}
    for r in results:
        doc["tasks"][r.task] = {"metrics": r.metrics, "categories": r.categories, "subjects": r.subjects,
                                "data_sha256": files_sha256(r.data_files), "data_files": len(r.data_files),
                                "info": r.info}
        header = (f"llmctl eval {r.task}  model={loaded.path}  mode={settings.get('mode')}  "
                  f"shots={settings.get('shots')}  {started.isoformat(timespec='seconds')}\n")
        write_text_atomic(out_dir / "logs" / f"eval_{stamp}" / f"{r.task}.log", task_table(r, header))
        if r.records:
            with atomic_file(out_dir / "predictions" / f"{r.task}.jsonl") as f:
                for rec in r.records:
                    f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    path = out_dir / RESULTS_FILE
    write_json_atomic(path, doc)
    return path


# ---- compare -----------------------------------------------------------------------------------------------
def load_results(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    if not path.is_file():
        raise UserError(f"results file not found: {path}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("tasks"), dict):
        raise UserError(f"{path}: not an llmctl eval results.json (no 'tasks')")
    return doc


def compare_text(a: dict[str, Any], b: dict[str, Any], name_a: str = "A", name_b: str = "B") -> str:
    """A diff table (A, B, B-A) of every task both files hold: headline metrics, categories, subjects."""
    lines = [f"A = {name_a} ({a.get('model', {}).get('path', '?')})",
             f"B = {name_b} ({b.get('model', {}).get('path', '?')})"]
    common = [t for t in a["tasks"] if t in b["tasks"]]
    if not common:
        raise UserError(f"{name_a} and {name_b} share no task ({', '.join(a['tasks'])} vs {', '.join(b['tasks'])})")
    for t in common:
        ta, tb = a["tasks"][t], b["tasks"][t]
        if ta.get("data_sha256") != tb.get("data_sha256"):
            lines.append(f"note: {t}: different data (data_sha256 differs)")
        lines += ["", f"[{t}]", f"{'':<44} {'A':>9} {'B':>9} {'B-A':>9}"]
        rows = [(k, ta["metrics"].get(k), tb["metrics"].get(k)) for k in ta["metrics"]
                if isinstance(ta["metrics"].get(k), float) or isinstance(tb["metrics"].get(k), float)]
        for section, label in (("categories", "category"), ("subjects", "subject")):
            sa, sb = ta.get(section, {}), tb.get(section, {})
            for name in dict.fromkeys([*sa, *sb]):
                rows.append((f"{label}:{name}", sa.get(name, {}).get("acc"), sb.get(name, {}).get("acc")))
        for label, va, vb in rows:
            delta = vb - va if isinstance(va, (int, float)) and isinstance(vb, (int, float)) else None
            sign = "+" if delta is not None and delta > 0 else ""
            lines.append(f"{label:<44} {_fmt(va):>9} {_fmt(vb):>9} {sign + _fmt(delta) if delta is not None else '-':>9}")
    only = sorted(set(a["tasks"]) ^ set(b["tasks"]))
    if only:
        lines += ["", f"only in one file: {', '.join(only)}"]
    return "\n".join(lines) + "\n"
