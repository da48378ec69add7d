"""What `llmctl data sample` reads: the Ultra-FineWeb layout (languages from folders or a column), the options
(`SampleSpec`) and one language's stream of eligible rows (`_Source`: byte lengths, score floors and the
per-document draw u from a hash of (file, row, seed)). The count/cut/write steps live in `sample.py`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from llmctl.core.errors import UserError

from .hashing import row_keys, stable_hash64, uniform01
from .pipeline import plan_shard, report_progress

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
