"""Dedup phase 3, per shard (copy every document not on the shard's removal list), and `run_dedup`.

`run_dedup` runs the three phases on one executor: signatures per shard, the join once (as one task), apply
per shard. Each phase leaves completion markers, so a rerun after a crash resumes where it stopped. A cluster
without Ray runs phase 1 and 3 as array jobs with `--shard-index/--num-shards` and phase 2 once in between.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from llmctl.core.errors import UserError
from llmctl.core.io import write_json_atomic

from ..executors import Executor, ShardDocuments, Shards, ShardStage, run_stage
from ..executors.base import inputs_signature
from ..executors.local import LocalExecutor
from ..pipeline import Count, StageStats, make_bar, nbytes, report_progress, shard_tag
from ..readers import _open_text, expand_inputs, pick_text_key, read_jsonl, reader_for
from ..writers import (
    clear_parts,
    finish_single_file,
    make_writer,
    output_format,
    parts_output,
    side_path,
    single_file_target,
)
from .join import JOIN_MEMORY_BYTES, JoinStage, load_metas
from .params import LANG_NAMES, METHODS, DedupParams, work_paths
from .signatures import SignatureStage


class ApplyStage(ShardStage):
    """Phase 3: write the shard's kept documents (jsonl to jsonl: the input lines byte for byte)."""

    name = "dedup"

    def __init__(self, work: Path, output: Path, text_key=None, out_format=None, max_file_mb: int = 1024):
        self.work, self.output, self.text_key = Path(work), Path(output), text_key
        self.out_format, self.max_file_mb = out_format, max_file_mb

    def fingerprint(self) -> dict[str, Any]:
        removal_lists = sorted(str(p) for p in self.work.glob("removed-*.npy"))
        return {"format": self.out_format, "max_file_mb": self.max_file_mb, "text_key": self.text_key,
                "join": inputs_signature(removal_lists)}

    def reset(self, shards: list[int] | None) -> None:
        clear_parts(self.output, shards)

    def run(self, documents: ShardDocuments, shard: int, num_shards: int) -> dict[str, Any]:
        tag = shard_tag(shard, num_shards)
        paths = work_paths(self.work, tag)
        if not paths["removed"].is_file():
            raise UserError(f"{paths['removed']}: no removal list for shard {shard}; run the join phase first")
        meta = json.loads(paths["meta"].read_text())
        removed = np.load(paths["removed"])
        n_docs = int(meta["docs"])
        method = np.full(n_docs, -1, dtype=np.int8)  # -1 keep, else the METHODS code that removed it
        method[removed[:, 0]] = removed[:, 1]
        files = documents.files
        if list(files) != meta["files"]:
            raise UserError(f"dedup apply: shard {shard}'s input files differ from the signatures phase")
        fmt = output_format(self.out_format, files)
        stats = _apply_stats(paths, method)
        bar = make_bar(self.quiet, desc=f"dedup apply {shard}/{num_shards}", unit="docs")
        with make_writer(fmt, self.output, f"part-{shard:05d}", self.max_file_mb << 20) as writer:
            if fmt == "jsonl" and all(reader_for(f) is read_jsonl for f in files):
                _copy_kept_lines(files, np.fromfile(paths["loc"], np.int64).reshape(-1, 2), method, writer, bar)
            else:
                key, n = None, 0
                for doc in documents:
                    key = key or pick_text_key(doc.row, self.text_key, doc.source)
                    if n < n_docs and method[n] < 0:
                        writer.write(doc.to_row(key), nbytes(doc.text))
                    n += 1
                    bar.update(1)
                    report_progress(1)
                if n != n_docs:
                    raise UserError(
                        f"dedup apply: shard {shard} has {n} documents now but {n_docs} when hashed; "
                        "the input changed — rerun all phases"
                    )
        bar.close()
        report = {"shard": [shard, num_shards], "stats": stats.to_dict(), "files": writer.files}
        write_json_atomic(self.output / f"_report-{tag}.json", report)
        return report

    def merge(self, reports: list[dict[str, Any]], complete: bool) -> dict[str, Any]:
        merged = super().merge(reports, complete)
        return {"stats": merged["stats"], "files": [f for r in reports for f in r["files"]],
                "summary": merged["summary"]}


def _apply_stats(paths: dict[str, Path], method: np.ndarray) -> StageStats:
    """Kept/dropped docs and bytes per language, from the arrays the signatures phase stored."""
    stats = StageStats("dedup")
    n = len(method)
    langs = np.fromfile(paths["lang"], np.uint8) if n else np.zeros(0, np.uint8)
    sizes = np.fromfile(paths["size"], np.int64) if n else np.zeros(0, np.int64)
    for code in np.unique(method):
        sel = method == code
        for lang_code in np.unique(langs[sel]):
            both = sel & (langs == lang_code)
            lang, docs, size = LANG_NAMES[int(lang_code)], int(both.sum()), int(sizes[both].sum())
            if code < 0:
                stats.kept.add(size, lang, docs=docs)
            else:
                stats.dropped.setdefault(f"duplicate-{METHODS[int(code)]}", Count()).add(
                    size, lang, docs=docs
                )
    return stats


def _copy_kept_lines(files: Sequence[str], locs: np.ndarray, method: np.ndarray, writer, bar) -> None:
    """jsonl to jsonl: copy the kept documents' lines byte for byte (no JSON parsing or re-encoding)."""
    for file_idx, path in enumerate(files):
        mine = locs[:, 0] == file_idx
        rows = locs[mine, 1]
        keep = np.zeros(int(rows.max()) + 1 if len(rows) else 0, dtype=bool)
        keep[rows[method[mine] < 0]] = True
        row = -1
        with _open_text(path, binary=True) as f:
            for raw in f:
                if not raw.strip():
                    continue
                row += 1
                if row < len(keep) and keep[row]:
                    writer.write_raw(raw if raw.endswith(b"\n") else raw + b"\n")
        done = int(mine.sum())
        bar.update(done)
        report_progress(done)


def run_dedup(
    inputs: Sequence[str],
    output: str | os.PathLike,
    params: DedupParams,
    text_key: str | None = None,
    workers: int = 1,
    num_shards: int | None = None,
    work_dir: str | os.PathLike | None = None,
    out_format: str | None = None,
    quiet: bool = False,
    executor: Executor | None = None,
    phase: str = "all",
    shard_index: int | None = None,
    join_memory_bytes: int = JOIN_MEMORY_BYTES,
) -> dict[str, Any]:
    """The three phases on `executor` (default: `workers` local processes); shards = workers unless given.

    `output` is a directory, or a single `.jsonl`/`.parquet` file (reports, pairs and the work dir then sit
    next to it as `_<name>.report.json`, `_<name>.pairs.jsonl`, `_<name>.dedup_work/`). `phase` runs one phase
    alone (`signatures`, `join`, `apply`), and `shard_index` one shard of it, for cluster array jobs.
    """
    executor = executor or LocalExecutor(workers)
    n = num_shards or (1 if phase != "all" else max(1, executor.workers))
    target, out_dir, out_format = parts_output(output, out_format)
    work = Path(work_dir) if work_dir else default_work_dir(output)
    pairs = side_path(target, "pairs.jsonl") if target else out_dir / "_pairs.jsonl"
    files = expand_inputs(inputs)
    shards = Shards(n, None if shard_index is None else (shard_index,))
    runs = []
    result: dict[str, Any] = {}
    if phase in ("all", "signatures"):
        result = run_stage(SignatureStage(work, params, text_key), files, None, shards, executor)
        runs.append(result["run"])
    if phase in ("all", "join"):
        metas = [str(work_paths(work, shard_tag(i, n))["meta"]) for i in range(n)]
        load_metas(work, n)  # a missing shard is a one-line error naming it, before any task starts
        result = run_stage(JoinStage(work, n, pairs, join_memory_bytes, params.verify), metas, None, 1, executor)
        runs.append(result["run"])
        summary = {k: v for k, v in result.items() if k != "run"}
    if phase in ("all", "apply"):
        result = run_stage(ApplyStage(work, out_dir, text_key, out_format), files, out_dir, shards, executor)
        runs.append(result["run"])
    if phase != "all":
        return {**result, "runs": runs}
    report = {
        "join": summary,
        "stats": result["stats"],
        "files": result["files"],
        "summary": result["summary"],
        "runs": runs,
    }
    if target:
        finish_single_file(report, target, out_dir)
    else:
        write_json_atomic(out_dir / "_report.json", report)
    return report


def default_work_dir(output: str | os.PathLike) -> Path:
    target = single_file_target(output)
    return side_path(target, "dedup_work") if target else Path(output) / "_dedup_work"
