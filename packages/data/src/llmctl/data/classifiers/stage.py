"""`llmctl data classify`: score a corpus with one or more classifiers, a stage on the one executor.

Every input row comes out with the classifiers' columns added (a quality score, a domain label and its
probability, ...), nothing dropped: filtering, sampling and mixing read the columns later. The output mirrors
the input's folders (so `en/`, `zh/` sub-folders still tell `sample` the language), one file per *slab* of
`--rows-per-file` rows of an input file: `OUT/<dir>/<stem>-<slab>.<jsonl|parquet>`.

Why slabs: a slab is the unit a shard owns. With at least as many files as shards a shard owns whole files (as
in every stage); with fewer, shards take slabs round-robin, instead of documents, so a shard still writes
whole files. A slab is cut into batches of `--batch-size` rows from its start, so every document is scored in
the same batch whatever the shard count, worker count or executor: the output bytes are the same (a BERT's
float rounding depends on what it is batched with). Each slab file is written under a temp name and renamed
when complete; each shard leaves a completion marker, so a rerun after a crash redoes only unfinished shards.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Sequence

from llmctl.core.errors import UserError
from llmctl.core.io import write_json_atomic

from ..executors import Executor, ShardDocuments, Shards, ShardStage, run_stage
from ..executors.base import inputs_signature
from ..executors.local import LocalExecutor
from ..pipeline import StageStats, make_bar, nbytes, report_progress
from ..readers import expand_inputs
from .meta import META_FILE, Meta, load_classifier, read_meta
from .report import ScoreReport, format_table
from .output import SlabWriter, output_schema

SLAB_FILE = re.compile(r"-\d{5}\.(jsonl|parquet)$")


def classifier_meta(directory: str, column: str | None = None) -> Meta:
    """A classifier's metadata with its output column renamed (`DIR=COLUMN`, --score-key, --label-key)."""
    meta = read_meta(directory)
    if column:
        meta.column = column
        if meta.task == "regression":
            meta.labels = [column]
    return meta


class ClassifyStage(ShardStage):
    """One shard's slabs: read a batch, score it with every classifier, append the rows to the slab's file."""

    name = "classify"

    def __init__(
        self,
        files: Sequence[str],
        output,
        classifiers: Sequence[tuple[str, str | None]],
        text_key=None,
        lang_key=None,
        domain_key="domain",
        batch_size=500,
        rows_per_file=100_000,
        out_format=None,
        sample_k=0,
        device="auto",
        threads=1,
    ):
        if batch_size < 1 or rows_per_file < 1:
            raise UserError(
                f"--batch-size and --rows-per-file must be >= 1, got {batch_size} and {rows_per_file}"
            )
        if not classifiers:
            raise UserError("--classifier: give at least one classifier directory")
        self.files, self.output = list(files), Path(output)
        self.dirs = [str(d) for d, _ in classifiers]
        self.metas = [classifier_meta(d, c) for d, c in classifiers]
        seen: dict[str, str] = {}
        for d, m in zip(self.dirs, self.metas):
            for col in {m.column, *m.score_columns()}:
                if col in seen:
                    raise UserError(
                        f"--classifier {d}: column '{col}' is also written by {seen[col]}; "
                        "rename one with DIR=COLUMN"
                    )
                seen[col] = d
        self.text_key, self.lang_key, self.domain_key = text_key, lang_key, domain_key
        self.batch_size, self.rows_per_file, self.out_format = int(batch_size), int(rows_per_file), out_format
        self.sample_k, self.device, self.threads = int(sample_k), device, threads
        from ..readers.rows import file_text_key

        for f in self.files:  # a file without the text column fails here, before any shard writes
            file_text_key(f, text_key)
        self.root = os.path.commonpath([os.path.abspath(os.path.dirname(f)) for f in self.files])
        if self.output.resolve() == Path(self.root).resolve():
            raise UserError(f"--output {output}: is the input directory; write the scored copy elsewhere")

    def fingerprint(self) -> dict[str, Any]:
        models = [
            [
                Path(d, META_FILE).read_text(encoding="utf-8"),
                inputs_signature(sorted(str(p) for p in Path(d).iterdir() if p.is_file())),
            ]
            for d in self.dirs
        ]
        return {
            "classifiers": models,
            "columns": [m.column for m in self.metas],
            "text_key": self.text_key,
            "lang_key": self.lang_key,
            "domain_key": self.domain_key,
            "batch_size": self.batch_size,
            "rows_per_file": self.rows_per_file,
            "format": self.out_format,
            "sample_k": self.sample_k,
        }

    def reset(self, shards: list[int] | None) -> None:
        """Temp files killed runs of `shards` left (named per shard, so array tasks running at the same time
        keep theirs); before a fresh full run, every temp file and the previous run's report."""
        if not self.output.is_dir():
            return
        patterns = [".*.tmp"] if shards is None else [f".*.{_tmp_tag(i)}.tmp" for i in shards]
        for pattern in patterns:
            for tmp in self.output.rglob(pattern):
                tmp.unlink(missing_ok=True)
        if shards is None:
            (self.output / "_report.json").unlink(missing_ok=True)

    def ranges(self) -> dict[str, tuple[float, float]]:
        out = {}
        for m in self.metas:
            lo, hi = (m.label_range or [0.0, 1.0]) if m.task == "regression" else (0.0, 1.0)
            out.update({c: (lo, hi) for c in m.score_columns()})
        return out

    def out_path(self, path: str, slab: int) -> tuple[Path, str]:
        from ..writers import output_format

        rel = Path(os.path.relpath(os.path.abspath(path), self.root))
        fmt = output_format(self.out_format, [path])
        return self.output / rel.parent / f"{_stem(rel.name)}-{slab:05d}.{fmt}", fmt

    def run(self, documents: ShardDocuments, shard: int, num_shards: int) -> dict[str, Any]:
        from ..text import detect_langs

        models = [load_classifier(d, device=self.device, threads=self.threads) for d in self.dirs]
        for model, meta in zip(models, self.metas):
            model.meta = meta  # the column names asked for on the command line
        stats = StageStats("classify")
        scores = ScoreReport(self.ranges(), self.sample_k)
        file_index = {f: i for i, f in enumerate(self.files)}
        files: list[dict[str, Any]] = []
        writer: SlabWriter | None = None
        bar = make_bar(self.quiet, desc=f"classify {shard}/{num_shards}", unit="docs")
        try:
            for batch in documents.slabs(self.batch_size, self.rows_per_file):
                if writer is None or writer.key != (batch.path, batch.slab):
                    if writer is not None:
                        files.append(writer.close())
                    target, fmt = self.out_path(batch.path, batch.slab)
                    writer = SlabWriter(
                        target,
                        fmt,
                        output_schema(batch.path, fmt, self.metas),
                        key=(batch.path, batch.slab),
                        tag=_tmp_tag(shard),
                    )
                columns: dict[str, list] = {}
                for model in models:
                    columns.update(model.columns(batch.texts))
                langs = self._langs(batch, detect_langs)
                domains = self._domains(batch, columns)
                for i, rec in enumerate(batch.records):
                    rec.update({c: v[i] for c, v in columns.items()})
                    stats.keep(nbytes(batch.texts[i]), langs[i])
                writer.write(batch.records)
                scores.add(columns, langs, domains, file_index[batch.path], batch.rows, batch.texts)
                bar.update(len(batch.records))
                report_progress(len(batch.records))
            if writer is not None:
                files.append(writer.close())
        except BaseException:
            if writer is not None:
                writer.abort()
            raise
        finally:
            bar.close()
        return {
            "shard": [shard, num_shards],
            "stats": stats.to_dict(),
            "scores": scores.to_dict(),
            "files": files,
        }

    def _langs(self, batch, detect_langs) -> list[str]:
        guessed = detect_langs(batch.texts)
        if not self.lang_key:
            return guessed
        return [
            str(r[self.lang_key]) if isinstance(r.get(self.lang_key), str) and r[self.lang_key] else g
            for r, g in zip(batch.records, guessed)
        ]

    def _domains(self, batch, columns: dict[str, list]) -> list[str] | None:
        key = self.domain_key
        if not key:
            return None
        if key in columns:
            return [str(v) for v in columns[key]]
        if any(key in r for r in batch.records):
            return [str(r.get(key)) if r.get(key) is not None else "unknown" for r in batch.records]
        return None

    def merge(self, reports: list[dict[str, Any]], complete: bool) -> dict[str, Any]:
        stats = StageStats("classify")
        scores = ScoreReport(self.ranges(), self.sample_k)
        for r in reports:
            stats.merge(StageStats.from_dict(r["stats"]))
            scores.merge_dict(r["scores"])
        files = sorted((f for r in reports for f in r["files"]), key=lambda f: f["path"])
        if complete:
            _remove_stale(self.output, {f["path"] for f in files})
        out = {
            "classifiers": [
                {
                    "dir": d,
                    "arch": m.arch,
                    "task": m.task,
                    "columns": [m.column, *m.score_columns()] if m.task == "multiclass" else [m.column],
                }
                for d, m in zip(self.dirs, self.metas)
            ],
            "stats": stats.to_dict(),
            "scores": scores.summary(),
            "files": files,
            "summary": stats.summary() + "\n" + format_table(scores.summary()),
        }
        if self.sample_k:
            out["examples"] = {
                c: {
                    "lowest": _named(scores.low[c], self.files),
                    "highest": _named(scores.high[c], self.files),
                }
                for c in scores.ranges
            }
        return out


def _tmp_tag(shard: int) -> str:
    return f"shard{shard:05d}"


def _named(items: list[dict[str, Any]], files: list[str]) -> list[dict[str, Any]]:
    return [{**{k: v for k, v in x.items() if k != "file"}, "source": files[x["file"]]} for x in items]


def _stem(name: str) -> str:
    """A file name without its reader extension (`a.jsonl.gz` -> `a`)."""
    from ..readers import readers

    exts = sorted(
        {e for r in readers().values() for e in getattr(r, "extensions", ())}, key=len, reverse=True
    )
    low = name.lower()
    return next((name[: -len(e)] for e in exts if low.endswith(e)), name)


def _remove_stale(output: Path, keep: set[str]) -> None:
    """Slab files an earlier run with other settings left behind (not `_`-prefixed work, not other files)."""
    for p in output.rglob("*"):
        if (
            p.is_file()
            and SLAB_FILE.search(p.name)
            and str(p) not in keep
            and not any(part.startswith("_") for part in p.relative_to(output).parts)
        ):
            p.unlink()


def run_classify(
    inputs: Sequence[str],
    output: str | os.PathLike,
    classifiers: Sequence[tuple[str, str | None]],
    text_key: str | None = None,
    lang_key: str | None = None,
    domain_key: str | None = "domain",
    batch_size: int = 500,
    rows_per_file: int = 100_000,
    out_format: str | None = None,
    sample_out: str | os.PathLike | None = None,
    sample_k: int = 5,
    device: str = "auto",
    threads: int | None = 1,
    workers: int = 1,
    num_shards: int | None = None,
    executor: Executor | None = None,
    shard_index: int | None = None,
) -> dict[str, Any]:
    """Every shard (or only `shard_index`) on `executor`; writes `OUT/_report.json` (and `sample_out`)."""
    executor = executor or LocalExecutor(workers)
    n = num_shards or max(1, executor.workers)
    out = Path(output).resolve()
    files = [f for f in expand_inputs(inputs) if out not in Path(f).resolve().parents]  # not our own output
    if not files:
        raise UserError(f"--input: every input file is under --output {output}")
    stage = ClassifyStage(
        files,
        output,
        classifiers,
        text_key,
        lang_key,
        domain_key,
        batch_size,
        rows_per_file,
        out_format,
        sample_k if sample_out else 0,
        device,
        threads,
    )
    shards = Shards(n, None if shard_index is None else (shard_index,))
    report = run_stage(stage, files, output, shards, executor)
    if shard_index is not None:
        return report
    write_json_atomic(Path(output) / "_report.json", report)
    if sample_out:
        from llmctl.core.io import atomic_file

        with atomic_file(sample_out) as f:
            for column, ex in report.get("examples", {}).items():
                for end in ("lowest", "highest"):
                    for x in ex[end]:
                        f.write(json.dumps({"column": column, "end": end, **x}, ensure_ascii=False) + "\n")
    return report
