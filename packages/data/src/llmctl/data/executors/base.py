"""`run_stage`: one executor for every data stage, with per-shard completion markers so a rerun resumes.

A stage is a `ShardStage`: `run(documents, shard, num_shards)` processes one shard (its documents come from the
one reader path, planned here) and returns a JSON-able report; `merge(reports, complete)` folds the per-shard
reports into one. `run_stage` plans the shards, skips those whose marker says they already finished with the
same inputs and parameters, hands the rest to an executor (a local process pool, Ray tasks, ...) and merges.
The stage never learns which executor ran it, so a Slurm array (one shard per task) runs the same code.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from llmctl.core.errors import UserError
from llmctl.core.io import write_json_atomic

from ..pipeline import Document, StageStats, check_shard, plan_shard, shard_tag

MARKER_DIR = "_done"


class ShardDocuments:
    """The documents of one shard, read lazily: iterate for `Document`s, or take `chunks()` of raw records.

    Both views come from the same plan and readers, so they agree on row numbers and error messages. Stages
    that copy input bytes (dedup's apply) use `plan.files` directly.
    """

    def __init__(self, files: Sequence[str], shard: int, num_shards: int, text_key: str | None = None):
        self.plan = plan_shard(list(files), shard, num_shards)
        self.text_key = text_key
        self.stats = StageStats("read")  # empty documents, counted rather than failed on

    @property
    def files(self) -> tuple[str, ...]:
        return self.plan.files

    def __iter__(self) -> Iterator[Document]:
        from ..readers import iter_documents

        return iter_documents(self.plan, self.text_key, self.stats)

    def records(self, on_first=None):
        """(path, row, where, record) of every row this shard keeps (`readers.rows.iter_records`)."""
        from ..readers.rows import iter_records

        return iter_records(self.plan, on_first)

    def slabs(self, batch_size: int, rows_per_file: int):
        """Batches of the row slabs this shard owns (`readers.slabs`): every row, none dropped (classify)."""
        from ..readers.slabs import slab_batches

        return slab_batches(self.plan, self.text_key, batch_size, rows_per_file)

    def chunks(self, max_docs: int, max_bytes: int):
        from ..readers.chunks import iter_chunks

        return iter_chunks(self.plan, self.text_key, max_docs, max_bytes)


class ShardStage:
    """Base class of a stage step; subclasses set `name` and implement `run` (and `merge` if not stats-only).

    `markers` is the directory holding the completion markers; `resources` is what one shard needs (Ray task
    options such as {"num_cpus": 1}); `quiet` is set by executors that run shards in worker processes.
    """

    name = "stage"
    text_key: str | None = None
    resources: dict[str, Any] = {"num_cpus": 1}
    quiet = False
    marker_dir: Path | None = None  # default: <output>/_done, set by run_stage

    def markers(self) -> Path:
        if self.marker_dir is None:
            raise UserError(f"{self.name}: no directory for completion markers")
        return Path(self.marker_dir)

    def fingerprint(self) -> dict[str, Any]:
        """Everything besides the inputs that changes this stage's output (a marker from other params is stale)."""
        return {}

    def reset(self, shards: list[int] | None) -> None:
        """Called before shards run: remove what an older run left for `shards` (None: for every shard, as
        before a fresh full run, which may follow a run with another shard count)."""

    def run(self, documents: ShardDocuments, shard: int, num_shards: int) -> dict[str, Any]:
        raise NotImplementedError

    def merge(self, reports: list[dict[str, Any]], complete: bool) -> dict[str, Any]:
        total = StageStats(self.name)
        for r in reports:
            total.merge(StageStats.from_dict(r["stats"]))
        return {"stats": total.to_dict(), "summary": total.summary()}


@dataclass(frozen=True)
class Shards:
    """`num_shards` shards, of which `indices` run here (None: all of them, then the stage's outputs merge)."""

    num_shards: int
    indices: tuple[int, ...] | None = None

    @classmethod
    def of(cls, shards: "int | Shards") -> "Shards":
        return shards if isinstance(shards, Shards) else cls(int(shards))

    def todo(self) -> list[int]:
        if self.indices is None:
            return list(range(self.num_shards))
        for i in self.indices:
            check_shard(i, self.num_shards)
        return list(self.indices)


class Executor:
    """Runs `fn(*args)` for each args tuple, possibly elsewhere; results in order, the first error raised."""

    name = "executor"
    workers = 1

    def map(self, fn: Callable[..., Any], calls: list[tuple], desc: str, resources: dict[str, Any]) -> list[Any]:
        raise NotImplementedError


def inputs_signature(files: Sequence[str]) -> list[list[Any]]:
    """(path, size, mtime) of every input: a marker written for other input bytes is stale."""
    out = []
    for f in files:
        st = os.stat(f)
        out.append([str(f), st.st_size, st.st_mtime_ns])
    return out


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def marker_path(stage: ShardStage, shard: int, num_shards: int) -> Path:
    return stage.markers() / f"{stage.name}-{shard_tag(shard, num_shards)}.json"


def read_marker(path: Path, fingerprint: str) -> dict[str, Any] | None:
    """The report a finished shard left, or None (no marker, unreadable, or from another configuration)."""
    try:
        m = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return m["report"] if isinstance(m, dict) and m.get("fingerprint") == fingerprint else None


def run_one(stage: ShardStage, files: Sequence[str], shard: int, num_shards: int, fingerprint: str, quiet: bool):
    """One shard, wherever the executor put it; its marker is written only after its outputs are complete."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    stage.quiet = quiet
    docs = ShardDocuments(files, shard, num_shards, stage.text_key)
    report = stage.run(docs, shard, num_shards)
    write_json_atomic(marker_path(stage, shard, num_shards), {"fingerprint": fingerprint, "report": report})
    return report


def run_stage(
    stage: ShardStage,
    inputs: Sequence[str],
    output: str | os.PathLike | None,
    shards: "int | Shards",
    executor: Executor,
) -> dict[str, Any]:
    """Run `stage` over `inputs` in `shards` on `executor`, resuming from completion markers; one report.

    `output` is where the markers go when the stage does not say (`<output>/_done`). The report carries a
    "run" entry (executor, shards run and skipped, seconds): the only part that differs between executors.
    """
    plan = Shards.of(shards)
    if plan.num_shards < 1:
        raise UserError(f"--num-shards must be >= 1, got {plan.num_shards}")
    if output is not None and stage.marker_dir is None:
        stage.marker_dir = Path(output) / MARKER_DIR
    files = list(inputs)
    fp = _digest({"stage": stage.name, "params": stage.fingerprint(), "inputs": inputs_signature(files),
                  "num_shards": plan.num_shards})
    t0 = time.perf_counter()
    todo = plan.todo()
    done = {i: r for i in todo if (r := read_marker(marker_path(stage, i, plan.num_shards), fp)) is not None}
    pending = [i for i in todo if i not in done]
    if pending:
        stage.reset(None if not done and plan.indices is None else pending)
    calls = [(stage, files, i, plan.num_shards, fp, executor.workers > 1) for i in pending]
    results = executor.map(run_one, calls, stage.name, stage.resources) if calls else []
    reports = {**done, **dict(zip(pending, results))}
    merged = stage.merge([reports[i] for i in todo], plan.indices is None)
    merged["run"] = {
        "stage": stage.name,
        "executor": executor.name,
        "workers": executor.workers,
        "num_shards": plan.num_shards,
        "shards_run": pending,
        "shards_skipped": sorted(done),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    return merged


def run_stage_in(stage: ShardStage, work: Path, inputs: Sequence[str], shards: "int | Shards",
                 executor: Executor) -> dict[str, Any]:
    """`run_stage` for a stage that spills its shards into the work dir `work` (markers inside): a run that
    fails before any shard finished removes the work dir, since there is nothing to resume from."""
    try:
        return run_stage(stage, inputs, None, shards, executor)
    except BaseException:
        if not any(stage.markers().glob("*.json")):
            shutil.rmtree(work, ignore_errors=True)
        raise


def resumed_note(runs: Sequence[dict[str, Any]]) -> str | None:
    """One line for the CLI when a rerun skipped steps whose shards an earlier run had finished."""
    parts = [
        f"{r['stage']} {len(r['shards_skipped'])}/{r['num_shards']}" for r in runs if r.get("shards_skipped")
    ]
    return "resumed: skipped completed shards (" + ", ".join(parts) + ")" if parts else None
