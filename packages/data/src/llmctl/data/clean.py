"""The clean stage: rule filters then PII handling, per shard, with a per-rule, per-language report."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from llmctl.core.io import write_json_atomic

from .filters import Filter, build_rules
from .pii import PiiStage
from .pipeline import (
    Document,
    Stage,
    StageStats,
    check_shard,
    make_bar,
    nbytes,
    plan_shard,
    report_progress,
    run_shards,
    shard_tag,
)
from .readers import expand_inputs, iter_documents, pick_text_key
from .writers import finish_single_file, make_writer, output_format, parts_output


class RuleStage(Stage):
    """Apply rules in order; the first rule returning None drops the document (counted under its name)."""

    name = "clean"

    def __init__(self, rules: Sequence[tuple[str, Filter]]):
        super().__init__()
        self.rules = list(rules)

    def process(self, docs: Iterable[Document]) -> Iterator[Document]:
        for doc in docs:
            text = doc.text
            size = nbytes(text)
            lang = doc.language()
            dropped = False
            for name, rule in self.rules:
                new = rule(text)
                if new is None:
                    self.stats.drop(name, size, lang)
                    dropped = True
                    break
                if new is not text and new != text:
                    new_size = nbytes(new)
                    self.stats.modify(name, size - new_size, lang)
                    text, size = new, new_size
            if not dropped:
                doc.text = text
                yield doc


def clean_shard(
    inputs: Sequence[str],
    output: str | os.PathLike,
    rules: str | Sequence[Any] = "default",
    pii: str = "mask",
    text_key: str | None = None,
    shard_index: int = 0,
    num_shards: int = 1,
    out_format: str | None = None,
    max_file_mb: int = 1024,
    quiet: bool = False,
) -> dict[str, Any]:
    """Clean shard `shard_index` of `num_shards`; writes `part-<shard>-<k>` files and `_report-<shard>.json`."""
    check_shard(shard_index, num_shards)
    plan = plan_shard(expand_inputs(inputs), shard_index, num_shards)
    read_stats = StageStats("read")
    rule_stage = RuleStage(build_rules(rules))
    pii_stage = PiiStage(pii)
    fmt = output_format(out_format, plan.files)
    bar = make_bar(quiet, desc=f"clean {shard_index}/{num_shards}", unit="docs")
    final = StageStats("clean")

    def counted(docs: Iterable[Document]) -> Iterator[Document]:
        for d in docs:
            bar.update(1)
            report_progress(1)
            yield d

    docs = counted(iter_documents(plan, text_key, read_stats))
    docs = rule_stage(docs)
    if pii != "keep":
        docs = pii_stage(docs)
    key = None
    with make_writer(fmt, output, f"part-{shard_index:05d}", max_file_mb << 20) as writer:
        for doc in docs:
            key = key or pick_text_key(doc.row, text_key, doc.source)
            size = nbytes(doc.text)
            writer.write(doc.to_row(key), size)
            final.keep(size, doc.language())
    bar.close()
    merged = StageStats("clean").merge(read_stats).merge(rule_stage.stats).merge(pii_stage.stats)
    merged.kept = final.kept
    report = {
        "shard": [shard_index, num_shards],
        "stats": merged.to_dict(),
        "pii_found": pii_stage.found,
        "rules": [name for name, _ in rule_stage.rules],
        "files": writer.files,
    }
    write_json_atomic(Path(output) / f"_report-{shard_tag(shard_index, num_shards)}.json", report)
    return report


def run_clean(
    inputs: Sequence[str],
    output: str | os.PathLike,
    rules: str | Sequence[Any] = "default",
    pii: str = "mask",
    text_key: str | None = None,
    workers: int = 1,
    num_shards: int | None = None,
    out_format: str | None = None,
    quiet: bool = False,
) -> dict[str, Any]:
    """Every shard locally (`workers` processes), then one merged `_report.json`.

    `output` is a directory, or a single `.jsonl`/`.parquet` file assembled from the shards' parts (its report
    is then `_<name>.report.json` next to it).
    """
    n = num_shards or max(1, workers)
    build_rules(rules)  # fail fast on a bad rules file, before starting workers
    target, out_dir, out_format = parts_output(output, out_format)
    reports = run_shards(
        clean_shard,
        n,
        workers,
        {
            "inputs": expand_inputs(inputs),
            "output": out_dir,
            "rules": rules,
            "pii": pii,
            "text_key": text_key,
            "out_format": out_format,
        },
        desc="clean",
    )
    report = merge_reports(reports, out_dir)
    if target:
        finish_single_file(report, target, out_dir)
    return report


def merge_reports(reports: list[dict[str, Any]], output: str | os.PathLike) -> dict[str, Any]:
    total = StageStats("clean")
    pii: dict[str, int] = {}
    for r in reports:
        total.merge(StageStats.from_dict(r["stats"]))
        for k, v in r.get("pii_found", {}).items():
            pii[k] = pii.get(k, 0) + v
    report = {
        "stats": total.to_dict(),
        "pii_found": pii,
        "rules": reports[0]["rules"] if reports else [],
        "files": [f for r in reports for f in r["files"]],
        "summary": total.summary(),
    }
    write_json_atomic(Path(output) / "_report.json", report)
    return report
