"""Sample a zh/en training subset from a scored parquet corpus (Ultra-FineWeb layout) to a byte budget.

Languages come from sub-folders (`ROOT/zh/*.parquet`, `ROOT/en/...`, or names like `ultrafineweb_zh`) or from
a language column. Every row draws u in [0, 1) from a hash of (file, row, seed), and two steps on the executor
stream Arrow record batches:
  1. count (per shard): a histogram of the eligible bytes (rows scoring at least their language's minimum) over
     u, per language; the histograms of all shards are summed and each language's cut is the smallest u bucket
     whose cumulative bytes reach its budget (size * ratio);
  2. write (per shard): every eligible row whose u falls at or under its language's cut.
So the selected rows depend on the seed and the data only, never on --num-shards or --workers. Within a shard
the languages are interleaved by deficit (the one furthest below its share goes next), so every output file
has the target mix, and files are rolled at --target-shard-mb on disk. Bytes are UTF-8 bytes of the text column;
1 GB = 2^30 bytes. A `manifest.json` records rows, bytes, per-language share and the source files. The input
layout, options and row streams are in `sample_source.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from llmctl.core.io import atomic_path, write_json_atomic

from .executors import Executor, ShardDocuments, Shards, ShardStage, run_stage
from .executors.local import LocalExecutor
from .pipeline import make_bar, report_progress, shard_tag
from .sample_source import BUCKETS, GB, MB, SampleSpec, discover, validate_ratios  # noqa: F401 (public names)
from .writers import ParquetWriter, clear_parts


class _SampleStep(ShardStage):
    def __init__(self, spec: SampleSpec):
        self.spec = spec
        self.marker_dir = Path(spec.out_dir) / "_done"

    def fingerprint(self) -> dict[str, Any]:
        return dict(vars(self.spec))


class CountStage(_SampleStep):
    """Step 1: each shard's eligible bytes by u bucket, per language, saved next to the markers."""

    name = "sample-count"

    def run(self, documents: ShardDocuments, shard: int, num_shards: int) -> dict[str, Any]:
        bar = make_bar(self.quiet, desc=f"sample: counting {shard}/{num_shards}", unit="rows")
        out = {}
        for src in self.spec.sources(shard, num_shards):
            path = Path(self.spec.out_dir) / "_sample_work" / f"hist-{src.lang}-{shard_tag(shard, num_shards)}.npy"
            path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_path(path) as tmp, open(tmp, "wb") as f:
                np.save(f, src.histogram(bar))
            out[src.lang] = str(path)
        bar.close()
        return {"shard": [shard, num_shards], "histograms": out}

    def merge(self, reports: list[dict[str, Any]], complete: bool) -> dict[str, Any]:
        return {"histograms": [r["histograms"] for r in reports]}


def cuts_for(spec: SampleSpec, hist: dict[str, np.ndarray], share: float = 1.0) -> dict[str, Any]:
    """Each language's cut bucket for its byte budget (scaled down, keeping the ratio, if one runs short)."""
    target = spec.train_size_gb * GB * share
    budgets = {lang: target * spec.ratios[lang] for lang in hist}
    eligible = {lang: int(h.sum()) for lang, h in hist.items()}
    scale = min([1.0] + [eligible[lang] / b for lang, b in budgets.items() if b > 0])
    short = None
    if scale < 1.0:
        short = {"requested_bytes": int(target), "scaled_to_bytes": int(target * scale), "eligible": eligible}
        budgets = {k: v * scale for k, v in budgets.items()}
    cuts = {}
    for lang, h in hist.items():
        cum = np.cumsum(h)
        cuts[lang] = int(min(np.searchsorted(cum, budgets[lang], side="left"), BUCKETS - 1))
    return {"cuts": cuts, "eligible": eligible, "short": short, "target": int(target)}


class WriteStage(_SampleStep):
    """Step 2: the shard's rows under the cuts, languages interleaved by deficit, rolled at the file size."""

    name = "sample"

    def __init__(self, spec: SampleSpec, cuts: dict[str, Any], hist_paths: list[dict[str, str]]):
        super().__init__(spec)
        self.cuts, self.hist_paths = cuts, hist_paths

    def fingerprint(self) -> dict[str, Any]:
        return {**super().fingerprint(), "cuts": self.cuts["cuts"]}

    def reset(self, shards: list[int] | None) -> None:
        clear_parts(self.spec.out_dir, shards)

    def run(self, documents: ShardDocuments, shard: int, num_shards: int) -> dict[str, Any]:
        spec, cuts = self.spec, self.cuts["cuts"]
        sources = spec.sources(shard, num_shards)
        mine = self.hist_paths[shard]
        expected = {s.lang: int(np.load(mine[s.lang])[: cuts[s.lang] + 1].sum()) for s in sources}
        streams = {s.lang: s.stream(cuts[s.lang]) for s in sources}
        written = {s.lang: 0 for s in sources}
        rows = {s.lang: 0 for s in sources}
        bar = make_bar(self.quiet, desc="sample: writing", unit="B", unit_scale=True, total=sum(expected.values()))
        writer = ParquetWriter(
            spec.out_dir,
            f"part-{shard:05d}",
            max_bytes=int(spec.target_shard_mb * MB),
            row_group_bytes=max(1, int(spec.target_shard_mb * MB / 8)),
            compression="zstd",
        )
        chunk_bytes = max(1, int(spec.target_shard_mb * MB / 32))
        pending: dict[str, Any] = {lang: None for lang in streams}
        try:
            active = [lang for lang in streams if expected[lang] > 0]
            while active:
                lang = min(active, key=lambda k: (written[k] / expected[k], k))
                item = pending[lang] or next(streams[lang], None)
                if item is None:
                    active.remove(lang)
                    continue
                table, lengths = item
                cum = np.cumsum(lengths)
                n = int(min(np.searchsorted(cum, chunk_bytes, side="left") + 1, len(lengths)))
                pending[lang] = (table.slice(n), lengths[n:]) if n < len(lengths) else None
                size = int(cum[n - 1])
                writer.write_table(table.slice(0, n), size)
                written[lang] += size
                rows[lang] += n
                bar.update(size)
                report_progress(n)
            writer.close()
        except BaseException:
            writer.abort()
            raise
        finally:
            bar.close()
        return {"rows": rows, "bytes": written, "files": writer.files, "shard": [shard, num_shards],
                "sources": sorted({f for s in sources for f in s.files})}

    def merge(self, reports: list[dict[str, Any]], complete: bool) -> dict[str, Any]:
        spec = self.spec
        written = {lang: sum(r["bytes"][lang] for r in reports) for lang in reports[0]["bytes"]}
        rows = {lang: sum(r["rows"][lang] for r in reports) for lang in written}
        total = sum(written.values())
        manifest = {
            "rows": sum(rows.values()),
            "bytes": total,
            "by_lang": {k: {"rows": rows[k], "bytes": written[k], "share": written[k] / total if total else 0.0}
                        for k in written},
            "target": {"train_size_gb": spec.train_size_gb, "bytes": self.cuts["target"], "ratios": spec.ratios,
                       "min_score": {"zh": spec.min_score_zh, "en": spec.min_score_en},
                       "target_shard_mb": spec.target_shard_mb},
            "seed": spec.seed,
            "num_shards": reports[0]["shard"][1],
            "eligible_bytes": self.cuts["eligible"],
            "cut": {lang: (c + 1) / BUCKETS for lang, c in self.cuts["cuts"].items()},
            "files": [f for r in reports for f in r["files"]],
            "sources": sorted({f for r in reports for f in r["sources"]}),
        }
        if self.cuts["short"]:
            manifest["short"] = self.cuts["short"]
        return manifest


def run_sample(
    workers: int = 1,
    num_shards: int | None = None,
    quiet: bool = False,
    executor: Executor | None = None,
    shard_index: int | None = None,
    **kw: Any,
) -> dict[str, Any]:
    """Count, cut, write on `executor` (default: `workers` local processes); writes `manifest.json`.

    With `shard_index` only that shard is written (a Slurm array task), but the count pre-pass (sizes, scores
    and draws only, no text kept) covers every shard, so the cuts come from the global histogram: the union of
    the array's outputs is the selection of a full run, whatever the shard count. The count shards leave
    markers in the shared output dir, so array tasks skip counts another task already finished. Each task
    writes `_manifest-<i>-of-<n>.json`.
    """
    spec = SampleSpec(**kw)
    spec.validate()
    executor = executor or LocalExecutor(workers)
    n = num_shards or max(1, executor.workers)
    shards = Shards(n, None if shard_index is None else (shard_index,))
    files = sorted({f for fs in spec.files().values() for f in fs})
    counted = run_stage(CountStage(spec), files, None, Shards(n), executor)  # always global: see above
    hist_paths = counted["histograms"]
    hist = {lang: sum(np.load(h[lang]) for h in hist_paths) for lang in hist_paths[0]}
    cuts = cuts_for(spec, hist)
    manifest = run_stage(WriteStage(spec, cuts, hist_paths), files, None, shards, executor)
    manifest["runs"] = [counted["run"], manifest.pop("run")]
    name = "manifest.json" if shard_index is None else f"_manifest-{shard_tag(shard_index, n)}.json"
    write_json_atomic(Path(spec.out_dir) / name, manifest)
    return manifest
