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
1 GB = 2^30 bytes. A `manifest.json` records rows, bytes, per-language share and the source files.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from llmctl.core.errors import UserError
from llmctl.core.io import atomic_path, write_json_atomic

from .executors import Executor, ShardDocuments, Shards, ShardStage, run_stage
from .executors.local import LocalExecutor
from .hashing import row_keys, stable_hash64, uniform01
from .pipeline import make_bar, plan_shard, report_progress, shard_tag
from .writers import ParquetWriter, clear_parts

GB = 1 << 30
MB = 1 << 20
LANGS = ("zh", "en")
BUCKETS = 1 << 16  # resolution of the per-document draw u: the budget is met to within one bucket's bytes
_LANG_IN_NAME = re.compile(r"(?:^|[_\-.])(zh|en)(?:$|[_\-.])", re.IGNORECASE)


def _lang_of_path(rel: str) -> str | None:
    for part in Path(rel).parts[:-1]:
        low = part.lower()
        if low in LANGS:
            return low
        m = _LANG_IN_NAME.search(low)
        if m:
            return m.group(1).lower()
    return None


def discover(input_root: str, lang_key: str | None) -> dict[str, list[str]]:
    """Parquet files per language (sorted); with --lang-key every file is listed under '*'."""
    root = Path(input_root)
    if not root.is_dir():
        raise UserError(f"--input-root {root}: not a directory")
    files = sorted(str(p) for p in root.rglob("*.parquet") if not p.name.startswith((".", "_")))
    if not files:
        raise UserError(f"--input-root {root}: no .parquet files found")
    if lang_key:
        return {"*": files}
    out: dict[str, list[str]] = {}
    for f in files:
        lang = _lang_of_path(os.path.relpath(f, root))
        if lang is None:
            raise UserError(
                f"{f}: cannot tell its language from the folder name (expected zh/ or en/ "
                "sub-folders); pass --lang-key for a language column"
            )
        out.setdefault(lang, []).append(f)
    return out


def _batches(path: str, columns: list[str], batch_rows: int = 4096):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise UserError(f"{path}: not a readable parquet file ({str(e).splitlines()[0]})") from None
    names = pf.schema_arrow.names
    for c in columns:
        if c not in names:
            raise UserError(f"{path}: no column '{c}' (columns: {', '.join(names)})")
    row = 0
    try:
        for batch in pf.iter_batches(batch_size=batch_rows, columns=columns):
            yield row, batch
            row += batch.num_rows
    except (pa.ArrowException, OSError) as e:
        raise UserError(f"{path}: corrupt parquet data near row {row} ({str(e).splitlines()[0]})") from None


class _Source:
    """One language's stream of selected rows, as Arrow tables with their text byte lengths."""

    def __init__(
        self,
        lang: str,
        files: list[str],
        root: str,
        cols: dict[str, str | None],
        min_score: dict,
        plan_by_doc: tuple[int, int] | None,
        seed: int,
    ):
        self.lang, self.files, self.root, self.cols = lang, files, root, cols
        self.min_score, self.plan_by_doc, self.seed = min_score, plan_by_doc, seed
        self.p = 1.0

    def _columns(self) -> list[str]:
        return [c for c in (self.cols["text"], self.cols["score"], self.cols["lang"]) if c]

    def _mask(self, path: str, start: int, batch) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(eligible mask, text byte lengths, language per row) for a record batch."""
        import pyarrow.compute as pc

        text = batch.column(self.cols["text"])
        lengths = pc.fill_null(pc.binary_length(text), 0).to_numpy(zero_copy_only=False).astype(np.int64)
        n = batch.num_rows
        if self.cols["lang"]:
            langs = np.asarray(
                pc.fill_null(batch.column(self.cols["lang"]).cast("string"), "").to_pylist(), dtype=object
            )
            langs = np.array([str(x).lower()[:2] for x in langs], dtype=object)
        else:
            langs = np.full(n, self.lang, dtype=object)
        ok = (lengths > 0) & np.isin(langs, [self.lang])
        if self.cols["score"]:
            score = pc.fill_null(batch.column(self.cols["score"]).cast("double"), float("-inf")).to_numpy(
                zero_copy_only=False
            )
            ok &= score >= self.min_score[self.lang]
        if self.plan_by_doc is not None:
            i, k = self.plan_by_doc
            ok &= (np.arange(start, start + n) % k) == i
        return ok, lengths, langs

    def _draws(self, path: str, start: int, n: int) -> np.ndarray:
        """u of rows start..start+n of `path`, as bucket numbers (the per-document hash, not the shard)."""
        rows = np.arange(start, start + n)
        u = uniform01(row_keys(stable_hash64(os.path.relpath(path, self.root)), rows, self.seed))
        return np.minimum((u * BUCKETS).astype(np.int64), BUCKETS - 1)

    def histogram(self, bar) -> np.ndarray:
        """Eligible bytes by u bucket."""
        hist = np.zeros(BUCKETS, np.int64)
        for path in self.files:
            for start, batch in _batches(path, self._columns()):
                ok, lengths, _ = self._mask(path, start, batch)
                buckets = self._draws(path, start, batch.num_rows)
                hist += np.bincount(buckets[ok], weights=lengths[ok], minlength=BUCKETS).astype(np.int64)
                bar.update(batch.num_rows)
                report_progress(batch.num_rows)
        return hist

    def stream(self, cut: int) -> Iterator[tuple[Any, np.ndarray]]:
        """Arrow tables of the eligible rows whose bucket is at most `cut`, with their text byte lengths."""
        import pyarrow as pa

        for path in self.files:
            rel = os.path.relpath(path, self.root)
            for start, batch in _batches(path, self._columns()):
                ok, lengths, _ = self._mask(path, start, batch)
                ok &= self._draws(path, start, batch.num_rows) <= cut
                rows = np.arange(start, start + batch.num_rows)
                idx = np.flatnonzero(ok)
                if len(idx) == 0:
                    continue
                take = pa.array(idx)
                text = batch.column(self.cols["text"]).take(take).cast(pa.string())
                score = (
                    batch.column(self.cols["score"]).take(take).cast(pa.float64())
                    if self.cols["score"]
                    else pa.nulls(len(idx), pa.float64())
                )
                table = pa.table(
                    {
                        "text": text,
                        "lang": pa.array([self.lang] * len(idx), pa.string()),
                        "score": score,
                        "source": pa.array([f"{rel}:{r}" for r in rows[idx]], pa.string()),
                    }
                )
                yield table, lengths[idx]


@dataclass
class SampleSpec:
    """What to sample (the command's options), shared by the count and write steps."""

    input_root: str
    out_dir: str
    train_size_gb: float
    zh_ratio: float
    en_ratio: float
    min_score_zh: float = 0.0
    min_score_en: float = 0.0
    target_shard_mb: float = 500
    text_key: str | None = None
    lang_key: str | None = None
    score_key: str | None = "score"
    seed: int = 42

    def validate(self) -> None:
        validate_ratios(self.zh_ratio, self.en_ratio)
        if self.train_size_gb <= 0:
            raise UserError(f"--train-size-gb must be > 0, got {self.train_size_gb}")
        if self.target_shard_mb <= 0:
            raise UserError(f"--target-shard-mb must be > 0, got {self.target_shard_mb}")

    @property
    def ratios(self) -> dict[str, float]:
        return {"zh": self.zh_ratio, "en": self.en_ratio}

    def files(self) -> dict[str, list[str]]:
        """Files per language taking part (ratio > 0)."""
        by_lang = discover(self.input_root, self.lang_key)
        out = {}
        for lang in LANGS:
            if self.ratios[lang] <= 0:
                continue
            files = by_lang["*"] if self.lang_key else by_lang.get(lang, [])
            if not files:
                raise UserError(
                    f"--input-root {self.input_root}: no {lang} files, but --{lang}-ratio is {self.ratios[lang]}"
                )
            out[lang] = files
        return out

    def sources(self, shard: int, num_shards: int) -> list[_Source]:
        files = self.files()
        first = next(iter(files.values()))[0]
        cols = {"text": self.text_key or _guess_text_column(first), "score": self.score_key or None,
                "lang": self.lang_key}
        min_score = {"zh": self.min_score_zh, "en": self.min_score_en}
        out = []
        for lang, fs in files.items():
            plan = plan_shard(fs, shard, num_shards)
            by_doc = (shard, num_shards) if plan.by_document else None
            out.append(_Source(lang, list(plan.files), self.input_root, cols, min_score, by_doc, self.seed))
        return out


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


def validate_ratios(zh_ratio: float, en_ratio: float) -> None:
    for name, r in (("--zh-ratio", zh_ratio), ("--en-ratio", en_ratio)):
        if not 0 <= r <= 1:
            raise UserError(f"{name} must be in [0, 1], got {r}")
    if abs(zh_ratio + en_ratio - 1.0) > 1e-6:
        raise UserError(
            f"--zh-ratio + --en-ratio must be 1, got {zh_ratio} + {en_ratio} = {zh_ratio + en_ratio:g}"
        )


def _guess_text_column(path: str) -> str:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        names = pq.ParquetFile(path).schema_arrow.names
    except (pa.ArrowException, OSError) as e:
        raise UserError(f"{path}: not a readable parquet file ({str(e).splitlines()[0]})") from None
    for c in ("text", "content"):
        if c in names:
            return c
    raise UserError(f"{path}: no 'text' or 'content' column (columns: {', '.join(names)}); pass --text-key")


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
