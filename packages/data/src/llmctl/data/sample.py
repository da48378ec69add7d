"""Sample a zh/en training subset from a scored parquet corpus (Ultra-FineWeb layout) to a byte budget.

Languages come from sub-folders (`ROOT/zh/*.parquet`, `ROOT/en/...`, or names like `ultrafineweb_zh`) or from
a language column. Two streaming passes over Arrow record batches:
  1. count the eligible bytes per language (rows scoring at least that language's minimum);
  2. keep each eligible row with probability p = 1.1 * budget / eligible, decided by a hash of (file, row,
     seed), reading files in a seeded order, until each language's byte budget (size * ratio) is met.
Languages are interleaved by deficit (the one furthest below its share goes next), so every output shard has
the target mix, and shards are rolled at --target-shard-mb on disk. Bytes are UTF-8 bytes of the text column;
1 GB = 2^30 bytes. A `manifest.json` records rows, bytes, per-language share and the source files.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from llmctl.core.errors import UserError
from llmctl.core.io import write_json_atomic

from .hashing import row_keys, stable_hash64, uniform01
from .pipeline import check_shard, make_bar, plan_shard, report_progress, run_shards, shard_tag
from .writers import ParquetWriter

GB = 1 << 30
MB = 1 << 20
LANGS = ("zh", "en")
OVERSAMPLE = 1.1
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

    def eligible_bytes(self, bar) -> int:
        total = 0
        for path in self.files:
            for start, batch in _batches(path, self._columns()):
                ok, lengths, _ = self._mask(path, start, batch)
                total += int(lengths[ok].sum())
                bar.update(batch.num_rows)
        return total

    def stream(self) -> Iterator[tuple[Any, np.ndarray]]:
        import pyarrow as pa

        order = list(self.files)
        random.Random(f"{self.seed}:{self.lang}").shuffle(order)
        for path in order:
            rel = os.path.relpath(path, self.root)
            h = stable_hash64(rel)
            for start, batch in _batches(path, self._columns()):
                ok, lengths, _ = self._mask(path, start, batch)
                rows = np.arange(start, start + batch.num_rows)
                if self.p < 1.0:
                    ok &= uniform01(row_keys(h, rows, self.seed)) < self.p
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


def sample_shard(
    input_root: str,
    out_dir: str | os.PathLike,
    train_size_gb: float,
    zh_ratio: float,
    en_ratio: float,
    min_score_zh: float = 0.0,
    min_score_en: float = 0.0,
    target_shard_mb: float = 500,
    text_key: str | None = None,
    lang_key: str | None = None,
    score_key: str | None = "score",
    seed: int = 42,
    shard_index: int = 0,
    num_shards: int = 1,
    quiet: bool = False,
) -> dict[str, Any]:
    """Sample shard `shard_index` of `num_shards` (each shard gets 1/num_shards of the budget)."""
    check_shard(shard_index, num_shards)
    validate_ratios(zh_ratio, en_ratio)
    if train_size_gb <= 0:
        raise UserError(f"--train-size-gb must be > 0, got {train_size_gb}")
    if target_shard_mb <= 0:
        raise UserError(f"--target-shard-mb must be > 0, got {target_shard_mb}")
    ratios = {"zh": zh_ratio, "en": en_ratio}
    by_lang = discover(input_root, lang_key)
    first = next(iter(by_lang.values()))[0]
    text_col = text_key or _guess_text_column(first)
    cols = {"text": text_col, "score": score_key or None, "lang": lang_key}
    min_score = {"zh": min_score_zh, "en": min_score_en}
    sources = []
    for lang in LANGS:
        if ratios[lang] <= 0:
            continue
        files = by_lang.get(lang, []) if not lang_key else by_lang["*"]
        if not files:
            raise UserError(
                f"--input-root {input_root}: no {lang} files, but --{lang}-ratio is {ratios[lang]}"
            )
        plan = plan_shard(files, shard_index, num_shards)
        sources.append(
            _Source(
                lang,
                list(plan.files),
                input_root,
                cols,
                min_score,
                (shard_index, num_shards) if plan.by_document else None,
                seed,
            )
        )

    bar = make_bar(quiet, desc="sample: counting eligible rows", unit="rows")
    eligible = {s.lang: s.eligible_bytes(bar) for s in sources}
    bar.close()
    target = train_size_gb * GB / num_shards
    budgets = {s.lang: target * ratios[s.lang] for s in sources}
    # too little eligible data in one language: shrink the whole sample so the ratio still holds
    scale = min([1.0] + [eligible[lang] / b for lang, b in budgets.items() if b > 0])
    short = None
    if scale < 1.0:
        short = {
            "requested_bytes": int(target),
            "scaled_to_bytes": int(target * scale),
            "eligible": {k: int(v) for k, v in eligible.items()},
        }
        budgets = {k: v * scale for k, v in budgets.items()}
    for s in sources:
        s.p = min(1.0, OVERSAMPLE * budgets[s.lang] / eligible[s.lang]) if eligible[s.lang] else 0.0

    written = {s.lang: 0 for s in sources}
    rows = {s.lang: 0 for s in sources}
    streams = {s.lang: s.stream() for s in sources}
    pending: dict[str, tuple[Any, np.ndarray] | None] = {lang: None for lang in streams}
    chunk_bytes = max(1, int(target_shard_mb * MB / 32))
    bar = make_bar(quiet, desc="sample: writing", unit="B", unit_scale=True, total=sum(budgets.values()))
    writer = ParquetWriter(
        out_dir,
        f"part-{shard_index:05d}",
        max_bytes=int(target_shard_mb * MB),
        row_group_bytes=max(1, int(target_shard_mb * MB / 8)),
        compression="zstd",
    )
    try:
        active = [lang for lang in streams if budgets[lang] > 0]
        while active:
            lang = min(active, key=lambda k: (written[k] / budgets[k], k))
            item = pending[lang]
            if item is None:
                item = next(streams[lang], None)
                if item is None:
                    active.remove(lang)  # ran out of eligible rows (only by the OVERSAMPLE margin's luck)
                    continue
            table, lengths = item
            remaining = budgets[lang] - written[lang]
            cum = np.cumsum(lengths)
            # rows up to the chunk size, and up to (and including) the row that meets the budget
            n = int(min(np.searchsorted(cum, min(remaining, chunk_bytes), side="left") + 1, len(lengths)))
            part, rest = table.slice(0, n), (table.slice(n), lengths[n:]) if n < len(lengths) else None
            pending[lang] = rest
            size = int(cum[n - 1])
            writer.write_table(part, size)
            written[lang] += size
            rows[lang] += n
            bar.update(size)
            report_progress(n)
            if written[lang] >= budgets[lang]:
                active.remove(lang)
        writer.close()
    except BaseException:
        writer.abort()
        raise
    finally:
        bar.close()
    total = sum(written.values())
    manifest = {
        "rows": sum(rows.values()),
        "bytes": total,
        "by_lang": {
            k: {"rows": rows[k], "bytes": written[k], "share": written[k] / total if total else 0.0}
            for k in written
        },
        "target": {
            "train_size_gb": train_size_gb,
            "bytes": int(target),
            "ratios": ratios,
            "min_score": min_score,
            "target_shard_mb": target_shard_mb,
        },
        "seed": seed,
        "shard": [shard_index, num_shards],
        "columns": cols,
        "eligible_bytes": {k: int(v) for k, v in eligible.items()},
        "keep_probability": {s.lang: s.p for s in sources},
        "files": writer.files,
        "sources": sorted({f for s in sources for f in s.files}),
    }
    if short:
        manifest["short"] = short
    name = "manifest.json" if num_shards == 1 else f"_manifest-{shard_tag(shard_index, num_shards)}.json"
    write_json_atomic(Path(out_dir) / name, manifest)
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
    workers: int = 1, num_shards: int | None = None, quiet: bool = False, **kw: Any
) -> dict[str, Any]:
    """All shards locally (`workers` processes); several shards get one merged manifest.json."""
    n = num_shards or 1
    validate_ratios(kw["zh_ratio"], kw["en_ratio"])
    manifests = run_shards(sample_shard, n, workers, kw, desc="sample", unit="rows")
    if n == 1:
        return manifests[0]
    total = sum(m["bytes"] for m in manifests)
    by_lang: dict[str, dict[str, float]] = {}
    for m in manifests:
        for k, v in m["by_lang"].items():
            slot = by_lang.setdefault(k, {"rows": 0, "bytes": 0})
            slot["rows"] += v["rows"]
            slot["bytes"] += v["bytes"]
    for v in by_lang.values():
        v["share"] = v["bytes"] / total if total else 0.0
    merged = {
        "rows": sum(m["rows"] for m in manifests),
        "bytes": total,
        "by_lang": by_lang,
        "target": {**manifests[0]["target"], "bytes": sum(m["target"]["bytes"] for m in manifests)},
        "seed": manifests[0]["seed"],
        "num_shards": n,
        "files": [f for m in manifests for f in m["files"]],
        "sources": sorted({f for m in manifests for f in m["sources"]}),
    }
    shorts = [m["short"] for m in manifests if m.get("short")]
    if shorts:
        merged["short"] = shorts
    write_json_atomic(Path(kw["out_dir"]) / "manifest.json", merged)
    return merged
