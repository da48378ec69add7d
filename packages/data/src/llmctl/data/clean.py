"""The clean stage: one filter chain per shard (the rules, then the `pii` filter for --pii mask|drop), with a
per-rule, per-language report."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from llmctl.core.io import write_json_atomic

from .filters import Filter, build_rules
from .executors import Executor, ShardDocuments, Shards, ShardStage, run_stage
from .executors.local import LocalExecutor
from .pipeline import Document, Stage, StageStats, make_bar, nbytes, report_progress, shard_tag
from .readers import expand_inputs, pick_text_key
from .writers import clear_parts, finish_single_file, make_writer, output_format, parts_output


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
                new = rule(text, doc) if getattr(rule, "uses_document", False) else rule(text)
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


class CleanStage(ShardStage):
    """The filter chain (rules, then PII) over one shard's documents, written as `part-<shard>-<k>` files with a per-shard report."""

    name = "clean"

    def __init__(self, output, rules="default", pii="mask", text_key=None, out_format=None, max_file_mb=1024):
        self.output, self.rules, self.pii, self.text_key = Path(output), rules, pii, text_key
        self.out_format, self.max_file_mb = out_format, max_file_mb
        self.chain()  # fail fast on a bad rules file or --pii, before any shard starts

    def chain(self) -> tuple[list[tuple[str, Filter]], Filter | None, list[str]]:
        """(the rules, then the registered `pii` filter unless --pii keep or the rules hold one already;
        the pii filter, to read its counts; the rules' names, as the report lists them)."""
        from llmctl.core.plugins import lookup

        rules = build_rules(self.rules)
        names = [name for name, _ in rules]
        pii = lookup("filters", "pii")(mode=self.pii)
        if self.pii == "keep" or "pii" in names:
            return rules, next((f for name, f in rules if name == "pii"), None), names
        return rules + [("pii", pii)], pii, names

    def fingerprint(self) -> dict[str, Any]:
        rules = self.rules if isinstance(self.rules, str) else repr(self.rules)
        if isinstance(rules, str) and os.path.isfile(rules):
            rules = Path(rules).read_text(encoding="utf-8")
        return {"rules": rules, "pii": self.pii, "text_key": self.text_key, "format": self.out_format,
                "max_file_mb": self.max_file_mb}

    def reset(self, shards: list[int] | None) -> None:
        clear_parts(self.output, shards)

    def run(self, documents: ShardDocuments, shard: int, num_shards: int) -> dict[str, Any]:
        rules, pii, names = self.chain()
        rule_stage = RuleStage(rules)
        fmt = output_format(self.out_format, documents.files)
        bar = make_bar(self.quiet, desc=f"clean {shard}/{num_shards}", unit="docs")
        final = StageStats("clean")

        def counted(docs: Iterable[Document]) -> Iterator[Document]:
            for d in docs:
                bar.update(1)
                report_progress(1)
                yield d

        docs = rule_stage(counted(documents))
        key = None
        with make_writer(fmt, self.output, f"part-{shard:05d}", self.max_file_mb << 20) as writer:
            for doc in docs:
                key = key or pick_text_key(doc.row, self.text_key, doc.source)
                size = nbytes(doc.text)
                writer.write(doc.to_row(key), size)
                final.keep(size, doc.language())
        bar.close()
        merged = StageStats("clean").merge(documents.stats).merge(rule_stage.stats)
        merged.kept = final.kept
        report = {
            "shard": [shard, num_shards],
            "stats": merged.to_dict(),
            "pii_found": dict(getattr(pii, "found", {})),
            "rules": names,
            "files": writer.files,
        }
        write_json_atomic(self.output / f"_report-{shard_tag(shard, num_shards)}.json", report)
        return report

    def merge(self, reports: list[dict[str, Any]], complete: bool) -> dict[str, Any]:
        total = StageStats("clean")
        pii: dict[str, int] = {}
        for r in reports:
            total.merge(StageStats.from_dict(r["stats"]))
            for k, v in r.get("pii_found", {}).items():
                pii[k] = pii.get(k, 0) + v
        return {
            "stats": total.to_dict(),
            "pii_found": dict(sorted(pii.items())),
            "rules": reports[0]["rules"] if reports else [],
            "files": [f for r in reports for f in r["files"]],
            "summary": total.summary(),
        }


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
    executor: Executor | None = None,
    shard_index: int | None = None,
) -> dict[str, Any]:
    """Every shard (or only `shard_index`) on `executor` (default: `workers` local processes), one report.

    `output` is a directory, or a single `.jsonl`/`.parquet` file assembled from the shards' parts (its report
    is then `_<name>.report.json` next to it).
    """
    executor = executor or LocalExecutor(workers)
    n = num_shards or max(1, executor.workers)
    target, out_dir, out_format = parts_output(output, out_format)
    stage = CleanStage(out_dir, rules, pii, text_key, out_format)
    shards = Shards(n, None if shard_index is None else (shard_index,))
    report = run_stage(stage, expand_inputs(inputs), out_dir, shards, executor)
    if shard_index is not None:
        return report
    if target:
        finish_single_file(report, target, out_dir)
    else:
        write_json_atomic(out_dir / "_report.json", report)
    return report
