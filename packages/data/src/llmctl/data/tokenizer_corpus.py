"""train-tokenizer's corpus pass as a stage on `run_stage`: read and normalise per shard, spill, train once.

Reading and decoding the corpus is the part of tokenizer training that scales with the data, so it runs as
shards on the executor (local processes, Ray tasks), each spilling its documents as `[key, text]` JSON lines
to `_DIR.corpus_work/shard-<i>-of-<n>.jsonl` and leaving a completion marker. The trainer (one process: the
sentencepiece / tokenizers trainers are multi-threaded themselves) then reads the spills merged by each
document's (file, row) key, i.e. in input order whatever the shard count, so the trained tokenizer does not
depend on --num-shards, --workers or the executor. The spill stays until training succeeds, so a rerun after
a failed training (too small a --vocab-size) skips the corpus pass.
"""

from __future__ import annotations

import heapq
import json
from pathlib import Path
from typing import Any, Iterator, Sequence

from .executors import Executor, ShardDocuments, ShardStage, run_stage_in
from .pipeline import StageStats, make_bar, report_progress, shard_tag

KEY_ROW_BITS = 40  # (global file index << 40) | row, as tokenize and sft key their documents


class CorpusStage(ShardStage):
    """One shard's non-empty documents -> a spill of `[key, text]` lines, in reading order."""

    name = "train-tokenizer-corpus"

    def __init__(self, files: Sequence[str], output_dir, text_key: str | None = None, silent: bool = False):
        self.files, self.text_key, self.silent = list(files), text_key, silent
        out = Path(output_dir)
        self.work = out.parent / f"_{out.name}.corpus_work"
        self.marker_dir = self.work / "_done"
        self.file_index = {f: i for i, f in enumerate(self.files)}

    def fingerprint(self) -> dict[str, Any]:
        return {"text_key": self.text_key, "spill": 1}

    def spill(self, shard: int, num_shards: int) -> Path:
        return self.work / f"shard-{shard_tag(shard, num_shards)}.jsonl"

    def run(self, documents: ShardDocuments, shard: int, num_shards: int) -> dict[str, Any]:
        from llmctl.core.io import atomic_file

        stats = StageStats("train-tokenizer")
        docs = chars = 0
        bar = make_bar(self.quiet or self.silent, desc=f"training text {shard}/{num_shards}", unit="docs")
        try:
            with atomic_file(self.spill(shard, num_shards)) as f:
                for doc in documents:
                    key = (self.file_index[doc.source] << KEY_ROW_BITS) | doc.index
                    f.write(json.dumps([key, doc.text]) + "\n")  # ASCII-escaped: lone surrogates survive
                    stats.keep(0)
                    docs += 1
                    chars += len(doc.text)
                    bar.update(1)
                    report_progress(1)
        finally:
            bar.close()
        stats.merge(documents.stats)
        return {"stats": stats.to_dict(), "docs": docs, "chars": chars, "spill": str(self.spill(shard, num_shards))}

    def merge(self, reports: list[dict[str, Any]], complete: bool) -> dict[str, Any]:
        merged = super().merge(reports, complete)
        return {**merged, "docs": sum(r["docs"] for r in reports), "chars": sum(r["chars"] for r in reports),
                "spills": [r["spill"] for r in reports]}


def _read_spill(path: str) -> Iterator[tuple[int, str]]:
    with open(path, encoding="utf-8") as f:
        for line in f:
            key, text = json.loads(line)
            yield key, text


def texts_in_key_order(spills: Sequence[str]) -> Iterator[str]:
    """Every spilled document, merged by key: the order one shard would have read them in."""
    for _key, text in heapq.merge(*(_read_spill(p) for p in spills), key=lambda kt: kt[0]):
        yield text


def corpus_pass(files: Sequence[str], output_dir, text_key: str | None, num_shards: int | None,
                executor: Executor | None, silent: bool = False) -> tuple[CorpusStage, dict[str, Any]]:
    """Run the corpus pass (resuming from markers); (stage, report with docs, chars, spills and "run")."""
    from .executors.local import LocalExecutor

    executor = executor or LocalExecutor(1)
    stage = CorpusStage(files, output_dir, text_key, silent)
    report = run_stage_in(stage, stage.work, files, num_shards or max(1, executor.workers), executor)
    return stage, report
