"""What a report reads, and only reads: each RUN_DIR's training log (llmctl JSONL, or a Megatron/MindSpeed
text log), the run's config and environment, `llmctl eval run` results.json files and a `llmctl bench
throughput` sweep. Every problem is one UserError naming the file or folder, raised before anything is written.

Where a run's config and environment come from, best first: the run record in its JSONL (every llmctl run
writes one per start, `train/run_record.py`); the latest checkpoint's config.yaml; for a Megatron text log,
its argument dump (`  seq_length ........ 4096`). The curves come from `plot.read_log`, the same reader as
`llmctl plot`, plus the grad norm it does not keep.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..plot import Curve, read_log, throughput

#: Folders inside a run dir that hold other tools' files, never the training log.
SKIP_DIRS = {"wandb", "tensorboard", "predictions", "eval", "logs_eval"}
_ARG = re.compile(r"^\s{2}([A-Za-z_][\w-]*) \.{3,} (.*)$")
_GRAD = re.compile(r"iteration\s+(\d+)\s*/.*?\| grad norm: ([-+0-9.eEnaif]+) \|")
_STEP_PREFIX = re.compile(r"^iter_(\d+)$")


@dataclasses.dataclass
class Run:
    name: str
    path: Path  # what was given on the command line
    log: Path
    curve: Curve
    grad_norm: dict[int, float]  # step -> grad norm (the later record wins, like the curve)
    config: dict[str, Any] | None
    environment: dict[str, Any] | None
    source: str  # where config/environment were read from, for the report to say
    checkpoint: Path | None

    @property
    def ms_per_step(self) -> float | None:
        return throughput(self.curve)[0]

    @property
    def tokens_per_s(self) -> float | None:
        return throughput(self.curve)[1]


@dataclasses.dataclass
class EvalResult:
    label: str
    path: Path
    model: dict[str, Any]
    settings: dict[str, Any]
    tasks: dict[str, dict[str, Any]]  # task -> metrics


@dataclasses.dataclass
class Bench:
    path: Path
    rows: list[dict[str, Any]]
    nproc_per_node: int


# ---- runs --------------------------------------------------------------------------------------------------
def _is_training_jsonl(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for _, line in zip(range(2000), f):
                if '"loss"' in line and '"lr"' in line:
                    return True
    except OSError:
        return False
    return False


def _is_megatron_log(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return any("elapsed time per iteration (ms)" in line for _, line in zip(range(5000), f))
    except OSError:
        return False


def _files(root: Path, pattern: str) -> list[Path]:
    return sorted(p for p in root.rglob(pattern) if p.is_file() and not SKIP_DIRS & set(p.relative_to(root).parts))


def find_log(path: Path) -> Path:
    """The one training log of a run: PATH itself if it is a file, else the JSONL (or, without one, the
    Megatron text log) found under PATH."""
    if path.is_file():
        return path
    if not path.is_dir():
        raise UserError(f"run not found: {path}")
    logs = [p for p in _files(path, "*.jsonl") if _is_training_jsonl(p)]
    if not logs:
        logs = [p for p in _files(path, "*.log") if _is_megatron_log(p)]
    if not logs:
        raise UserError(f"{path}: no training log found (an llmctl RUN.jsonl or a Megatron/MindSpeed .log with "
                        "'elapsed time per iteration (ms)' lines)")
    if len(logs) > 1:
        raise UserError(f"{path}: several training logs ({', '.join(str(p.relative_to(path)) for p in logs)}); "
                        "give each run's own folder or log file")
    return logs[0]


def _run_record(log: Path) -> dict[str, Any] | None:
    """The newest run record of an llmctl JSONL log (the environment of its latest start)."""
    found = None
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith('{"run"'):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec.get("run"), dict) and "config" in rec["run"]:
                found = rec["run"]
    return found


def _checkpoint(root: Path) -> Path | None:
    pointers = sorted(root.rglob("latest_checkpointed_iteration.txt")) if root.is_dir() else []
    return pointers[0].parent if pointers else None


def _checkpoint_config(ckpt: Path) -> tuple[dict | None, str]:
    import yaml

    try:
        it = int((ckpt / "latest_checkpointed_iteration.txt").read_text().strip())
    except (OSError, ValueError):
        return None, ""
    path = ckpt / f"iter_{it:07d}" / "config.yaml"
    if not path.is_file():
        return None, ""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")), str(path)
    except yaml.YAMLError as e:
        raise UserError(f"{path}: not valid YAML ({e})") from None


def _megatron_args(log: Path) -> dict[str, str]:
    args = {}
    for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
        m = _ARG.match(line)
        if m:
            args[m.group(1)] = m.group(2).strip()
    return args


def _grad_norms(log: Path, curve_steps: list[int]) -> dict[int, float]:
    text = log.read_text(encoding="utf-8", errors="replace")
    out: dict[int, float] = {}
    if text.lstrip()[:1] == "{":
        for line in text.splitlines():
            if '"grad_norm"' not in line:
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "event" not in rec and "lr" in rec and rec.get("grad_norm") is not None:
                out[rec["step"]] = rec["grad_norm"]
    else:
        for m in _GRAD.finditer(text):
            out[int(m.group(1))] = float(m.group(2))
    keep = set(curve_steps)
    return {s: v for s, v in sorted(out.items()) if s in keep}


def read_run(path: Path, seq_length: int | None = None) -> Run:
    log = find_log(path)
    curve = read_log(log, seq_length)
    ckpt = _checkpoint(path if path.is_dir() else path.parent)
    config = environment = None
    source = ""
    record = _run_record(log) if log.suffix == ".jsonl" else None
    if record is not None:
        config, environment, source = record["config"], record.get("environment"), f"run record in {log}"
    elif ckpt is not None:
        config, source = _checkpoint_config(ckpt)
    if config is None and log.suffix != ".jsonl":
        args = _megatron_args(log)
        if args:
            config, source = {"arguments": args}, f"argument dump in {log}"
    name = path.stem if path.is_file() else path.name
    return Run(name=name, path=path, log=log, curve=curve, grad_norm=_grad_norms(log, curve.step), config=config,
               environment=environment, source=source, checkpoint=ckpt)


def read_runs(paths: list[Path], seq_length: int | None = None) -> list[Run]:
    """Each run, named after its folder (or log file); clashing names get their parent folder in front
    (runs/a/logs and runs/b/logs are "a/logs" and "b/logs"), then a number."""
    runs = [read_run(p, seq_length) for p in paths]
    names = [r.name for r in runs]
    for run in runs:
        if names.count(run.name) > 1:
            run.name = f"{run.path.resolve().parent.name}/{run.name}"
    seen: dict[str, int] = {}
    for run in runs:
        seen[run.name] = seen.get(run.name, 0) + 1
        if seen[run.name] > 1:
            run.name = f"{run.name} ({seen[run.name]})"
    return runs


# ---- eval results ------------------------------------------------------------------------------------------
def read_eval(path: Path, runs: list[Run]) -> EvalResult:
    file = path / "results.json" if path.is_dir() else path
    if not file.is_file():
        raise UserError(f"eval results not found: {file} (the --out-dir of `llmctl eval run`)")
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{file}: not valid JSON ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("tasks"), dict):
        raise UserError(f"{file}: not an llmctl eval results.json (no 'tasks')")
    tasks = {}
    for task, body in doc["tasks"].items():
        if not isinstance(body, dict) or not isinstance(body.get("metrics"), dict):
            raise UserError(f"{file}: task '{task}' has no 'metrics'")
        tasks[task] = body["metrics"]
    model = doc.get("model") if isinstance(doc.get("model"), dict) else {}
    settings = doc.get("settings") if isinstance(doc.get("settings"), dict) else {}
    return EvalResult(label=_eval_label(path, model, settings, runs), path=file, model=model, settings=settings,
                      tasks=tasks)


def _run_of(checkpoint: str | None, runs: list[Run]) -> Run | None:
    if not checkpoint:
        return None
    target = Path(checkpoint).resolve()
    while _STEP_PREFIX.match(target.name) or target.name == "adapter":  # ckpt/iter_N/adapter -> ckpt
        target = target.parent
    return next((r for r in runs if r.checkpoint is not None and r.checkpoint.resolve() == target), None)


def _eval_label(path: Path, model: dict, settings: dict, runs: list[Run]) -> str:
    """The run whose checkpoint (or LoRA adapter, on its base) was evaluated, else the eval folder's name."""
    lora = _run_of(settings.get("lora_dir"), runs)
    if lora is not None:
        return f"{lora.name} (LoRA on {Path(str(model.get('path', '?'))).name})"
    run = _run_of(model.get("path"), runs)
    if run is not None:
        return run.name
    return path.name if path.is_dir() else path.parent.name


# ---- a throughput sweep ------------------------------------------------------------------------------------
def read_bench(path: Path) -> Bench:
    file = path / "throughput.json" if path.is_dir() else path
    if not file.is_file():
        raise UserError(f"throughput sweep not found: {file} (the --output of `llmctl bench throughput -c CONFIG "
                        "--sweep ...`)")
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{file}: not valid JSON ({e})") from None
    rows = doc.get("rows") if isinstance(doc, dict) else None
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "config" in r and "status" in r for r in rows):
        raise UserError(f"{file}: not a `llmctl bench throughput` result (no rows with config and status)")
    return Bench(path=file, rows=rows, nproc_per_node=int(doc.get("nproc_per_node") or 1))
